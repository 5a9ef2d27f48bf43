"""Ingress keys, conferences, participants, the outbox, webhooks and the billing view.

Revision ID: 0001
Revises:
"""

from service.adapters.migration_sql import execute_script

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("""
    CREATE TABLE ingress_request (
        caller           text        NOT NULL,
        idempotency_key  text        NOT NULL,
        body_sha256      text        NOT NULL,
        conference_id    uuid        NOT NULL,
        command          jsonb       NOT NULL,
        created_at       timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT ingress_request_pkey PRIMARY KEY (caller, idempotency_key),
        CONSTRAINT ingress_request_conference_id_key UNIQUE (conference_id)
    );
    CREATE INDEX ingress_request_created_at_idx ON ingress_request (created_at);

    CREATE TABLE conference (
        id                     uuid        NOT NULL,
        command_id             uuid        NOT NULL,
        caller                 text        NOT NULL,
        idempotency_key        text        NOT NULL,
        status                 text        NOT NULL,
        reference              text,
        metadata               jsonb       NOT NULL DEFAULT '{}',
        max_duration_seconds   integer,
        requested_at           timestamptz NOT NULL,
        accepted_at            timestamptz NOT NULL DEFAULT now(),
        provider_conference_id text,
        dialed_at              timestamptz,
        provider_ended_at      timestamptz,
        cancel_requested_at    timestamptz,
        finalized_at           timestamptz,
        failure_reason         text,
        poll_count             integer     NOT NULL DEFAULT 0,
        next_action_at         timestamptz,
        claim_token            uuid,
        claimed_at             timestamptz,
        leased_until           timestamptz,
        nudged_at              timestamptz,
        last_sequence          integer     NOT NULL DEFAULT 0,
        CONSTRAINT conference_pkey PRIMARY KEY (id),
        CONSTRAINT conference_command_id_key UNIQUE (command_id),
        CONSTRAINT conference_caller_idempotency_key_key UNIQUE (caller, idempotency_key),
        CONSTRAINT conference_status_check CHECK (status IN (
            'accepted', 'dialing', 'in_progress', 'completed', 'failed', 'canceled', 'unresolved'))
    );
    -- The poll schedule: only unfinished conferences are in it, so it stays small however
    -- much history the table holds.
    CREATE INDEX conference_next_action_at_idx ON conference (next_action_at)
        WHERE next_action_at IS NOT NULL;
    CREATE INDEX conference_caller_accepted_at_idx
        ON conference (caller, accepted_at DESC, id DESC);
    CREATE UNIQUE INDEX conference_provider_conference_id_key
        ON conference (provider_conference_id) WHERE provider_conference_id IS NOT NULL;
    ALTER TABLE conference SET (autovacuum_vacuum_scale_factor = 0.02,
                                autovacuum_analyze_scale_factor = 0.02);

    CREATE TABLE participant (
        conference_id     uuid        NOT NULL,
        position          smallint    NOT NULL,
        number            text        NOT NULL,
        caller_id         text,
        record            boolean     NOT NULL,
        dial_state        text        NOT NULL DEFAULT 'pending',
        dial_started_at   timestamptz,
        provider_call_id  text,
        provider_status   text,
        started_at        timestamptz,
        duration_seconds  integer,
        billed_seconds    integer,
        talk_seconds      integer,
        price             numeric(12, 4),
        currency          text        NOT NULL DEFAULT 'BRL',
        recording_url     text,
        settled_at        timestamptz,
        reconciled_at     timestamptz,
        rejection_reason  text,
        CONSTRAINT participant_pkey PRIMARY KEY (conference_id, position),
        CONSTRAINT participant_conference_id_fkey FOREIGN KEY (conference_id)
            REFERENCES conference (id) ON DELETE CASCADE,
        CONSTRAINT participant_conference_id_number_key UNIQUE (conference_id, number),
        CONSTRAINT participant_dial_state_check CHECK (
            dial_state IN ('pending', 'dialing', 'dialed', 'rejected'))
    );
    CREATE UNIQUE INDEX participant_provider_call_id_key ON participant (provider_call_id)
        WHERE provider_call_id IS NOT NULL;

    CREATE TABLE outbox (
        id             bigserial   NOT NULL,
        event_id       uuid        NOT NULL,
        conference_id  uuid        NOT NULL,
        sequence       integer     NOT NULL,
        topic          text        NOT NULL,
        key            text        NOT NULL,
        value          jsonb       NOT NULL,
        created_at     timestamptz NOT NULL DEFAULT now(),
        published_at   timestamptz,
        CONSTRAINT outbox_pkey PRIMARY KEY (id),
        CONSTRAINT outbox_event_id_key UNIQUE (event_id),
        CONSTRAINT outbox_conference_id_sequence_key UNIQUE (conference_id, sequence)
    );
    CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;

    CREATE TABLE provider_webhook (
        id                      bigserial   NOT NULL,
        received_at             timestamptz NOT NULL DEFAULT now(),
        provider_conference_id  text,
        provider_call_id        text,
        conference_id           uuid,
        payload                 jsonb       NOT NULL,
        CONSTRAINT provider_webhook_pkey PRIMARY KEY (id)
    );
    CREATE INDEX provider_webhook_provider_conference_id_idx
        ON provider_webhook (provider_conference_id) WHERE conference_id IS NULL;

    -- The one stable interface for downstream billing: one row per provider call of a
    -- finalized conference. Columns may be added; none is renamed or removed.
    CREATE VIEW billing_conference_call AS
    SELECT c.id                      AS conference_id,
           c.provider_conference_id,
           p.provider_call_id,
           c.caller,
           c.reference,
           p.number,
           p.provider_status,
           p.started_at,
           p.started_at + make_interval(secs => p.duration_seconds) AS ended_at,
           p.duration_seconds,
           p.billed_seconds,
           p.talk_seconds,
           p.price,
           p.currency,
           p.recording_url,
           c.finalized_at,
           p.reconciled_at
      FROM conference c
      JOIN participant p ON p.conference_id = c.id
     WHERE c.finalized_at IS NOT NULL
       AND p.provider_call_id IS NOT NULL;
    """)


def downgrade() -> None:
    execute_script("""
    DROP VIEW billing_conference_call;
    DROP TABLE provider_webhook;
    DROP TABLE outbox;
    DROP TABLE participant;
    DROP TABLE conference;
    DROP TABLE ingress_request;
    """)
