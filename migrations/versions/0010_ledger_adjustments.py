"""An append-only ledger: corrections found by reconcile are adjustment rows, never overwrites.

A participant's billed figures stay as they were first settled. `ledger_adjustment` holds one
row per corrected field (before, after, the report and the run it came from); the billing view
shows each call's current value (the latest adjustment's `after`, else the original) and how
many adjustments it has. Each run keeps its summary as text next to its JSON summary.

Expand only on the way up. The way down folds the adjustments into the participant rows (the
old contract: reconcile overwrote them) before it drops the table, so no correction is lost.

Revision ID: 0010
Revises: 0009
"""

from service.adapters.migration_sql import execute_script

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# The billing view of 0007, kept to restore it on the way down.
_OLD_BILLING_VIEW = """
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
"""

# The same columns in the same order, then the new ones. `reconciled_at` keeps its meaning
# (when reconcile last changed what the row bills).
_BILLING_VIEWS = """
    CREATE VIEW participant_current AS
    SELECT p.conference_id,
           p.position,
           coalesce(d.after::integer, p.duration_seconds) AS duration_seconds,
           coalesce(b.after::integer, p.billed_seconds)   AS billed_seconds,
           coalesce(t.after::integer, p.talk_seconds)     AS talk_seconds,
           coalesce(m.after::numeric(18, 6), p.price)     AS price,
           coalesce(n.adjustments, 0)                     AS adjustments,
           n.last_adjusted_at
      FROM participant p
      LEFT JOIN LATERAL (
           SELECT count(*)::integer AS adjustments, max(created_at) AS last_adjusted_at
             FROM ledger_adjustment a
            WHERE a.conference_id = p.conference_id AND a.position = p.position) n ON true
      LEFT JOIN LATERAL (
           SELECT a.after FROM ledger_adjustment a
            WHERE a.conference_id = p.conference_id AND a.position = p.position
              AND a.field = 'duration_seconds' ORDER BY a.ordinal DESC LIMIT 1) d ON true
      LEFT JOIN LATERAL (
           SELECT a.after FROM ledger_adjustment a
            WHERE a.conference_id = p.conference_id AND a.position = p.position
              AND a.field = 'billed_seconds' ORDER BY a.ordinal DESC LIMIT 1) b ON true
      LEFT JOIN LATERAL (
           SELECT a.after FROM ledger_adjustment a
            WHERE a.conference_id = p.conference_id AND a.position = p.position
              AND a.field = 'talk_seconds' ORDER BY a.ordinal DESC LIMIT 1) t ON true
      LEFT JOIN LATERAL (
           SELECT a.after FROM ledger_adjustment a
            WHERE a.conference_id = p.conference_id AND a.position = p.position
              AND a.field = 'price' ORDER BY a.ordinal DESC LIMIT 1) m ON true;

    CREATE VIEW billing_conference_call AS
    SELECT c.id                      AS conference_id,
           c.provider_conference_id,
           p.provider_call_id,
           c.caller,
           c.reference,
           p.number,
           p.provider_status,
           p.started_at,
           p.started_at + make_interval(secs => cur.duration_seconds) AS ended_at,
           cur.duration_seconds,
           cur.billed_seconds,
           cur.talk_seconds,
           cur.price,
           p.currency,
           p.recording_url,
           c.finalized_at,
           coalesce(cur.last_adjusted_at, p.reconciled_at) AS reconciled_at,
           cur.adjustments,
           cur.last_adjusted_at,
           p.source = 'reconcile'    AS found_by_reconcile
      FROM conference c
      JOIN participant p ON p.conference_id = c.id
      JOIN participant_current cur
        ON cur.conference_id = p.conference_id AND cur.position = p.position
     WHERE c.finalized_at IS NOT NULL
       AND p.provider_call_id IS NOT NULL;

    CREATE VIEW billing_adjustment AS
    SELECT a.id                      AS adjustment_id,
           a.event_id,
           a.conference_id,
           c.provider_conference_id,
           a.provider_call_id,
           a.field,
           a.ordinal,
           a.before,
           a.after,
           a.source,
           a.run_id,
           a.created_at
      FROM ledger_adjustment a
      JOIN conference c ON c.id = a.conference_id;
"""


def upgrade() -> None:
    execute_script(
        """
    CREATE TABLE ledger_adjustment (
        id                bigserial   NOT NULL,
        event_id          uuid        NOT NULL,
        conference_id     uuid        NOT NULL,
        position          integer     NOT NULL,
        provider_call_id  text,
        field             text        NOT NULL,
        ordinal           integer     NOT NULL,
        before            text,
        after             text        NOT NULL,
        source            text        NOT NULL,
        run_id            bigint      NOT NULL,
        created_at        timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT ledger_adjustment_pkey PRIMARY KEY (id),
        CONSTRAINT ledger_adjustment_event_id_key UNIQUE (event_id),
        -- The n-th correction of a call's field exists once: a rerun or a retry adds nothing.
        CONSTRAINT ledger_adjustment_call_field_ordinal_key
            UNIQUE (conference_id, position, field, ordinal),
        CONSTRAINT ledger_adjustment_field_check
            CHECK (field IN ('price', 'billed_seconds', 'duration_seconds', 'talk_seconds')),
        CONSTRAINT ledger_adjustment_ordinal_check CHECK (ordinal >= 1),
        CONSTRAINT ledger_adjustment_participant_fkey FOREIGN KEY (conference_id, position)
            REFERENCES participant (conference_id, position),
        CONSTRAINT ledger_adjustment_run_id_fkey FOREIGN KEY (run_id)
            REFERENCES reconcile_run (id)
    );
    CREATE INDEX ledger_adjustment_run_id_idx ON ledger_adjustment (run_id);

    ALTER TABLE reconcile_run ADD COLUMN report text;

    DROP VIEW billing_conference_call;
    """
    )
    execute_script(_BILLING_VIEWS)


def downgrade() -> None:
    execute_script(
        """
    DROP VIEW billing_adjustment;
    DROP VIEW billing_conference_call;
    UPDATE participant p
       SET duration_seconds = cur.duration_seconds, billed_seconds = cur.billed_seconds,
           talk_seconds = cur.talk_seconds, price = cur.price,
           reconciled_at = coalesce(cur.last_adjusted_at, p.reconciled_at)
      FROM participant_current cur
     WHERE cur.conference_id = p.conference_id AND cur.position = p.position
       AND cur.adjustments > 0;
    DROP VIEW participant_current;
    DROP TABLE ledger_adjustment;
    ALTER TABLE reconcile_run DROP COLUMN report;
    """
    )
    execute_script(_OLD_BILLING_VIEW)
