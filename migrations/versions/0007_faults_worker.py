"""installation id and worker probes

Revision ID: 0007_faults_worker
Revises: 0006_learning_path
Create Date: 2026-11-30 04:10:00
"""
import uuid

import sqlalchemy as sa
from alembic import op

import service.models

revision = '0007_faults_worker'
down_revision = '0006_learning_path'
branch_labels = None
depends_on = None


def upgrade() -> None:
    installation = op.create_table(
        'installation',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('created_at', service.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_installation')),
    )
    # Named once, at the first migrate: every part of this installation reads the same id.
    op.bulk_insert(installation, [{'id': uuid.uuid4().hex[:12], 'created_at': service.models.utcnow()}])
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('probe_ok_at', service.models.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_column('probe_ok_at')
    op.drop_table('installation')
