"""Count each participant's status changes, so that a status that returns (A -> B -> A) is a
change of its own with an event id of its own.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Expand only: a constant default is stored in the catalog, no table rewrite.
    op.execute(
        "ALTER TABLE participant ADD COLUMN status_changes integer NOT NULL DEFAULT 0"
        " CONSTRAINT participant_status_changes_not_negative CHECK (status_changes >= 0)"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE participant DROP COLUMN status_changes")
