"""Participants added to a running conference (POST /v1/conferences/{id}/participants).

`participant_request` is the api's record of an add: the caller's key, the body's fingerprint,
the command it published and the position it reserved for the number. `conference.
participant_count` counts the positions taken (reserved or accepted): reservations and the
worker's final save both check it on the conference row, so a conference never finishes while
a participant it answered 202 for is on its way. `participant.command_id` names the add that
made a participant, so a redelivered add is accepted once.

Expand only: old code ignores the new table and columns.

Revision ID: 0011
Revises: 0010
"""

from service.adapters.migration_sql import execute_script

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("""
    CREATE TABLE participant_request (
        caller           text        NOT NULL,
        idempotency_key  text        NOT NULL,
        body_sha256      text        NOT NULL,
        command_id       uuid        NOT NULL,
        conference_id    uuid        NOT NULL,
        position         smallint    NOT NULL,
        number           text        NOT NULL,
        command          jsonb       NOT NULL,
        created_at       timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT participant_request_pkey PRIMARY KEY (caller, idempotency_key),
        CONSTRAINT participant_request_command_id_key UNIQUE (command_id),
        CONSTRAINT participant_request_conference_id_position_key UNIQUE (conference_id, position),
        CONSTRAINT participant_request_conference_id_number_key UNIQUE (conference_id, number)
    );
    CREATE INDEX participant_request_created_at_idx ON participant_request (created_at);

    ALTER TABLE conference ADD COLUMN participant_count smallint;
    UPDATE conference c
       SET participant_count = (SELECT count(*) FROM participant p WHERE p.conference_id = c.id);
    ALTER TABLE conference ALTER COLUMN participant_count SET NOT NULL;
    ALTER TABLE conference ALTER COLUMN participant_count SET DEFAULT 0;

    ALTER TABLE participant ADD COLUMN command_id uuid;
    CREATE UNIQUE INDEX participant_command_id_key ON participant (command_id)
        WHERE command_id IS NOT NULL;
    """)


def downgrade() -> None:
    execute_script("""
    DROP INDEX participant_command_id_key;
    ALTER TABLE participant DROP COLUMN command_id;
    ALTER TABLE conference DROP COLUMN participant_count;
    DROP TABLE participant_request;
    """)
