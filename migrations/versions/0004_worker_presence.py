"""Which workers are alive, so that they can share the provider's request budget.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE worker_presence (
        worker_id  text        NOT NULL,
        seen_at    timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT worker_presence_pkey PRIMARY KEY (worker_id)
    )
    """)


def downgrade() -> None:
    op.execute("DROP TABLE worker_presence")
