"""The trace context a conference keeps: the W3C `traceparent` of the command that asked for it
(null when tracing is off), which every later step and the publish of each event link to.
`outbox.trace_parent` carries it to the relay without a join.

Expand only: old code ignores the new columns.

Revision ID: 0012
Revises: 0011
"""

from service.adapters.migration_sql import execute_script

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("""
    ALTER TABLE conference ADD COLUMN trace_parent text;
    ALTER TABLE outbox ADD COLUMN trace_parent text;
    """)


def downgrade() -> None:
    execute_script("""
    ALTER TABLE outbox DROP COLUMN trace_parent;
    ALTER TABLE conference DROP COLUMN trace_parent;
    """)
