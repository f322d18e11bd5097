"""gangs: jobs.gpus and the allocations table (job, attempt, device), filled for jobs already placed

Revision ID: 0008_scheduling_allocations
Revises: 0007_faults_worker
Create Date: 2026-11-30 04:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0008_scheduling_allocations'
down_revision = '0007_faults_worker'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gpus', sa.Integer(), nullable=False, server_default='1'))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.alter_column('gpus', server_default=None)
    op.create_table('allocations',
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.String(length=200), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('leader', sa.Boolean(), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_allocations_device_id_devices')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_allocations_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'device_id', name=op.f('pk_allocations'))
    )
    with op.batch_alter_table('allocations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_allocations_device_id'), ['device_id'], unique=False)
    # Jobs placed before this revision hold their one device.
    op.execute("INSERT INTO allocations (job_id, device_id, attempt, leader, rank) "
               "SELECT id, device_id, attempt, true, 0 FROM jobs "
               "WHERE status IN ('dispatched', 'running') AND device_id IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table('allocations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_allocations_device_id'))
    op.drop_table('allocations')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('gpus')
