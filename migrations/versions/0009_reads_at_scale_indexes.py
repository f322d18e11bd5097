"""indexes for reads at 100,000 jobs: job pages per filter, finished-since windows, utilisation means

Revision ID: 0009_reads_at_scale
Revises: 0008_scheduling_allocations
Create Date: 2026-11-30 07:30:00
"""
from alembic import op

revision = '0009_reads_at_scale'
down_revision = '0008_scheduling_allocations'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # (owner_id, id) and (kind, id) replace the single-column indexes they start with.
    op.drop_index('ix_jobs_owner_id', table_name='jobs')
    op.drop_index('ix_jobs_kind', table_name='jobs')
    op.create_index('ix_jobs_owner_id_id', 'jobs', ['owner_id', 'id'])
    op.create_index('ix_jobs_kind_id', 'jobs', ['kind', 'id'])
    op.create_index('ix_jobs_status_id', 'jobs', ['status', 'id'])
    op.create_index('ix_jobs_finished_at', 'jobs', ['finished_at'])
    op.create_index('ix_device_samples_device_t_util', 'device_samples', ['device_id', 't', 'utilization_pct'])


def downgrade() -> None:
    op.drop_index('ix_device_samples_device_t_util', table_name='device_samples')
    op.drop_index('ix_jobs_finished_at', table_name='jobs')
    op.drop_index('ix_jobs_status_id', table_name='jobs')
    op.drop_index('ix_jobs_kind_id', table_name='jobs')
    op.drop_index('ix_jobs_owner_id_id', table_name='jobs')
    op.create_index('ix_jobs_kind', 'jobs', ['kind'])
    op.create_index('ix_jobs_owner_id', 'jobs', ['owner_id'])
