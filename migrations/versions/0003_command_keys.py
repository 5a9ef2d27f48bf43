"""Idempotency keys that expire: a key may be used again once it has been pruned (7 days).

Revision ID: 0003
Revises: 0002
"""

from service.adapters.migration_sql import execute_script

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("""
    -- The worker's record of which caller + key became which command. A unique constraint on
    -- the conference itself could never expire, and a key reused after pruning would then be
    -- answered 202 by the api and dropped by the worker.
    CREATE TABLE command_key (
        caller           text        NOT NULL,
        idempotency_key  text        NOT NULL,
        command_id       uuid        NOT NULL,
        created_at       timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT command_key_pkey PRIMARY KEY (caller, idempotency_key)
    );
    CREATE INDEX command_key_created_at_idx ON command_key (created_at);
    INSERT INTO command_key (caller, idempotency_key, command_id, created_at)
        SELECT caller, idempotency_key, command_id, accepted_at FROM conference;
    ALTER TABLE conference DROP CONSTRAINT conference_caller_idempotency_key_key;
    """)


def downgrade() -> None:
    execute_script("""
    ALTER TABLE conference ADD CONSTRAINT conference_caller_idempotency_key_key
        UNIQUE (caller, idempotency_key);
    DROP TABLE command_key;
    """)
