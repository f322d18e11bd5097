"""a job's device request stored parsed: request_kind, request_device_id, request_model, request_min_memory_gb

Revision ID: 0005_scheduling_request
Revises: 0004_command_jobs
Create Date: 2026-11-30 04:30:00
"""
import re

import sqlalchemy as sa
from alembic import op

revision = '0005_scheduling_request'
down_revision = '0004_command_jobs'
branch_labels = None
depends_on = None

_ID = re.compile(r"^[^/]+/(cpu|cuda)(:\d+)?$")


def _parse(text: str) -> dict[str, object]:
    # Stored requests are canonical (what submit wrote), so this reads only those forms; it is a
    # frozen copy so the migration keeps working whatever the service's parser becomes.
    low = text.strip().lower()
    if low == "cpu":
        return {"kind": "cpu", "device_id": None, "model": None, "gb": None}
    if m := _ID.match(text.strip()):
        return {"kind": m[1].lower(), "device_id": text.strip(), "model": None, "gb": None}
    model, gb = None, None
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key.strip().lower() == "model":
            model = value.strip()
        elif key.strip().lower() == "min_memory_gb":
            gb = float(value)
    return {"kind": "cuda", "device_id": None, "model": model, "gb": gb}


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_kind', sa.String(length=8), nullable=False, server_default='cuda'))
        batch_op.add_column(sa.Column('request_device_id', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('request_model', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('request_min_memory_gb', sa.Float(), nullable=True))
    jobs = sa.table('jobs', sa.column('id', sa.Integer), sa.column('device_request', sa.String),
                    sa.column('request_kind', sa.String), sa.column('request_device_id', sa.String),
                    sa.column('request_model', sa.String), sa.column('request_min_memory_gb', sa.Float))
    bind = op.get_bind()
    requests = bind.execute(sa.select(jobs.c.device_request).distinct()).scalars().all()
    for text in requests:
        r = _parse(text)
        bind.execute(jobs.update().where(jobs.c.device_request == text).values(
            request_kind=r["kind"], request_device_id=r["device_id"], request_model=r["model"],
            request_min_memory_gb=r["gb"]))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.alter_column('request_kind', server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('request_min_memory_gb')
        batch_op.drop_column('request_model')
        batch_op.drop_column('request_device_id')
        batch_op.drop_column('request_kind')
