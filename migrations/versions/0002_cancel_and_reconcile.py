"""Cancellation before acceptance, calls found by reconciliation, and reconcile runs.

Revision ID: 0002
Revises: 0001
"""

from service.adapters.migration_sql import execute_script

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("""
    -- A DELETE can arrive before the worker has taken the command from Kafka.
    ALTER TABLE ingress_request ADD COLUMN cancel_requested_at timestamptz;

    -- Callers list and filter by when they asked, not by when a worker accepted.
    DROP INDEX conference_caller_accepted_at_idx;
    CREATE INDEX conference_caller_requested_at_idx
        ON conference (caller, requested_at DESC, id DESC);

    -- A participant row is either one the caller asked for, or a billed call the provider
    -- reported and we did not know (found by reconcile): both are billing rows.
    ALTER TABLE participant ADD COLUMN source text NOT NULL DEFAULT 'command';
    ALTER TABLE participant ADD CONSTRAINT participant_source_check
        CHECK (source IN ('command', 'reconcile'));
    ALTER TABLE participant DROP CONSTRAINT participant_conference_id_number_key;
    CREATE UNIQUE INDEX participant_conference_id_number_key
        ON participant (conference_id, number) WHERE source = 'command';

    CREATE TABLE reconcile_run (
        id            bigserial   NOT NULL,
        period_start  timestamptz NOT NULL,
        period_end    timestamptz NOT NULL,
        started_at    timestamptz NOT NULL DEFAULT now(),
        finished_at   timestamptz,
        outcome       text,
        summary       jsonb       NOT NULL DEFAULT '{}',
        CONSTRAINT reconcile_run_pkey PRIMARY KEY (id),
        CONSTRAINT reconcile_run_outcome_check
            CHECK (outcome IN ('clean', 'discrepancies', 'failed'))
    );

    CREATE TABLE reconcile_finding (
        id                      bigserial NOT NULL,
        run_id                  bigint    NOT NULL,
        kind                    text      NOT NULL,
        provider_conference_id  text,
        provider_call_id        text,
        conference_id           uuid,
        detail                  jsonb     NOT NULL DEFAULT '{}',
        CONSTRAINT reconcile_finding_pkey PRIMARY KEY (id),
        CONSTRAINT reconcile_finding_run_id_fkey FOREIGN KEY (run_id)
            REFERENCES reconcile_run (id) ON DELETE CASCADE
    );
    CREATE INDEX reconcile_finding_run_id_idx ON reconcile_finding (run_id);
    """)


def downgrade() -> None:
    execute_script("""
    DROP TABLE reconcile_finding;
    DROP TABLE reconcile_run;
    DROP INDEX participant_conference_id_number_key;
    DELETE FROM participant WHERE source = 'reconcile';
    ALTER TABLE participant ADD CONSTRAINT participant_conference_id_number_key
        UNIQUE (conference_id, number);
    ALTER TABLE participant DROP CONSTRAINT participant_source_check;
    ALTER TABLE participant DROP COLUMN source;
    DROP INDEX conference_caller_requested_at_idx;
    CREATE INDEX conference_caller_accepted_at_idx
        ON conference (caller, accepted_at DESC, id DESC);
    ALTER TABLE ingress_request DROP COLUMN cancel_requested_at;
    """)
