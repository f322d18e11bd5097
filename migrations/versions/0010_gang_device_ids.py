"""gangs: jobs.device_ids, every device of a job's last placement (usage reads a gang's on all of them)

Revision ID: 0010_gang_device_ids
Revises: 0009_reads_at_scale
Create Date: 2026-11-30 07:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0010_gang_device_ids'
down_revision = '0009_reads_at_scale'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('device_ids', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('device_ids')
