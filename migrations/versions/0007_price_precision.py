"""Prices to six decimal places: participant.price numeric(12, 4) -> numeric(18, 6).

The provider's prices can carry more than four places; rounding them here made the ledger
differ from the provider's bill. The billing view reads the column, so it is dropped and
created again, with the same columns in the same order.

Revision ID: 0007
Revises: 0006
"""

from service.adapters.migration_sql import execute_script

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_BILLING_VIEW = """
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


def upgrade() -> None:
    # Widening: every stored value fits, none changes.
    execute_script(
        """
    DROP VIEW billing_conference_call;
    ALTER TABLE participant ALTER COLUMN price TYPE numeric(18, 6);
    """
        + _BILLING_VIEW
    )


def downgrade() -> None:
    # Back to four places: values are rounded (half away from zero), as the old code did.
    execute_script(
        """
    DROP VIEW billing_conference_call;
    ALTER TABLE participant ALTER COLUMN price TYPE numeric(12, 4) USING round(price, 4);
    """
        + _BILLING_VIEW
    )
