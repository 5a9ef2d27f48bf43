"""The relay leases outbox rows instead of holding a transaction open while it sends.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Expand only: a nullable column, no rewrite. Old relays ignore it (and still lock).
    op.execute("ALTER TABLE outbox ADD COLUMN leased_until timestamptz")


def downgrade() -> None:
    op.execute("ALTER TABLE outbox DROP COLUMN leased_until")
