"""The class view: ``runs.recipe`` (from the config, so the list filters and sorts on it in
SQL), ``runs.archived`` (when an instructor archived it; hidden from the list and the board,
never deleted) and ``lab_flags`` (the lab's switches an instructor sets at run time, such as
a paused queue or locked launching). Older runs get their recipe from their config.

Revision ID: 0004_class_view
Revises: 0003_run_owners
Create Date: 2026-12-02
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_class_view"
down_revision: str | Sequence[str] | None = "0003_run_owners"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A frozen view of the table, as this revision sees it.
_runs = sa.table("runs", sa.column("id", sa.String(32)), sa.column("config", sa.Text),
                 sa.column("recipe", sa.String(32)))


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("recipe", sa.String(32)))
        batch.add_column(sa.Column("archived", sa.Float()))
        batch.create_index("ix_runs_recipe", ["recipe"])
    op.create_table(
        "lab_flags",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("changed", sa.Float, nullable=False),
        sa.Column("changed_by", sa.String(80)),
    )
    conn = op.get_bind()
    for run_id, config in conn.execute(sa.select(_runs.c.id, _runs.c.config)).all():
        try:
            recipe = json.loads(config).get("recipe")
        except (ValueError, AttributeError):
            recipe = None  # a config this revision cannot read keeps no recipe
        if isinstance(recipe, str):
            conn.execute(_runs.update().where(_runs.c.id == run_id).values(recipe=recipe[:32]))


def downgrade() -> None:
    op.drop_table("lab_flags")
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_recipe")
        batch.drop_column("archived")
        batch.drop_column("recipe")
