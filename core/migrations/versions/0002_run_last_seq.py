"""``runs.last_seq``: the highest seq stored for the run, filled in from its events.

Revision ID: 0002_run_last_seq
Revises: 0001_initial
Create Date: 2025-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_run_last_seq"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen views of the two tables, as this revision sees them (never core.store's, which move on).
_runs = sa.table("runs", sa.column("id", sa.String(32)), sa.column("last_seq", sa.Integer()))
_events = sa.table("events", sa.column("run_id", sa.String(32)), sa.column("seq", sa.Integer()))


def upgrade() -> None:
    # On SQLite a plain ADD COLUMN (NOT NULL is allowed with a default): no table copy.
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("last_seq", sa.Integer(), nullable=False,
                                   server_default="0"))
    highest = (sa.select(sa.func.coalesce(sa.func.max(_events.c.seq), 0))
               .where(_events.c.run_id == _runs.c.id)
               .scalar_subquery())
    op.execute(_runs.update().values(last_seq=highest))


def downgrade() -> None:
    # On SQLite this copies the table; core.schema turns foreign keys off around migrations
    # so that dropping the old copy of ``runs`` does not cascade to ``events``.
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("last_seq")
