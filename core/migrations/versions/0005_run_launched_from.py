"""``runs.client`` is named for what it holds: ``runs.launched_from``, "<address>/<owner>"
(the per-address caps count it). Every value is kept.

Revision ID: 0005_run_launched_from
Revises: 0004_class_view
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_run_launched_from"
down_revision: str | Sequence[str] | None = "0004_class_view"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # On SQLite the batch copies the table; core.schema migrates with foreign keys off, so
    # dropping the old copy takes no events with it.
    with op.batch_alter_table("runs") as batch:
        batch.alter_column("client", new_column_name="launched_from",
                           existing_type=sa.String(64), existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.alter_column("launched_from", new_column_name="client",
                           existing_type=sa.String(64), existing_nullable=True)
