"""Who a run is: ``owner`` (the browser's id), ``owner_name`` (the name it gave),
``cancelled_by`` (who stopped it) and ``promoted`` (when an instructor moved it to the
front). Older runs get their owner from the browser part of ``client``.

Revision ID: 0003_run_owners
Revises: 0002_run_last_seq
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_run_owners"
down_revision: str | Sequence[str] | None = "0002_run_last_seq"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A frozen view of the table, as this revision sees it.
_runs = sa.table("runs", sa.column("id", sa.String(32)), sa.column("client", sa.String(64)),
                 sa.column("owner", sa.String(32)))


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("owner", sa.String(32)))
        batch.add_column(sa.Column("owner_name", sa.String(64)))
        batch.add_column(sa.Column("cancelled_by", sa.String(80)))
        batch.add_column(sa.Column("promoted", sa.Float()))
        batch.create_index("ix_runs_owner", ["owner"])
    conn = op.get_bind()
    # client was "<address>/<browser id>": the browser is the owner.
    for run_id, client in conn.execute(sa.select(_runs.c.id, _runs.c.client)
                                       .where(_runs.c.client.is_not(None))).all():
        owner = client.rsplit("/", 1)[-1][:32]
        conn.execute(_runs.update().where(_runs.c.id == run_id).values(owner=owner))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_owner")
        for name in ("promoted", "cancelled_by", "owner_name", "owner"):
            batch.drop_column(name)
