"""runtime: the software a device's worker runs and a job ran with

Revision ID: 0006_learning_path
Revises: 0005_scheduling_request
Create Date: 2026-11-30 04:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006_learning_path'
down_revision = '0005_scheduling_request'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('devices', sa.Column('runtime', sa.JSON(), nullable=True))
    op.add_column('jobs', sa.Column('runtime', sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column('jobs', 'runtime')
    op.drop_column('devices', 'runtime')
