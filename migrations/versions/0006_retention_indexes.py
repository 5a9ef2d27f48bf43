"""Indexes the retention pruning walks, oldest first: published outbox rows and webhooks.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Expand only. Built inside the migration's transaction (a short write lock on each table,
    # fine at our sizes); on a large deployment, build them CONCURRENTLY by hand first and
    # this migration finds them (IF NOT EXISTS).
    op.execute("""
    CREATE INDEX IF NOT EXISTS outbox_published_at_idx ON outbox (published_at)
        WHERE published_at IS NOT NULL
    """)
    op.execute("""
    CREATE INDEX IF NOT EXISTS provider_webhook_received_at_idx
        ON provider_webhook (received_at)
    """)


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS provider_webhook_received_at_idx")
    op.execute("DROP INDEX IF EXISTS outbox_published_at_idx")
