"""Running a migration's hand-written SQL through alembic on asyncpg."""

from __future__ import annotations

from alembic import op


def execute_script(script: str) -> None:
    """asyncpg prepares each statement, so a script goes one statement at a time; statements
    end with a semicolon at the end of a line."""
    for statement in script.split(";\n"):
        if statement.strip():
            op.execute(statement)
