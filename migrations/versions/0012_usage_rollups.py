"""rollups for reads at scale: each final job's utilisation readings, and tallies of final jobs for /metrics

Revision ID: 0012_usage_rollups
Revises: 0011_job_metric_summaries
Create Date: 2026-11-30 10:05:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0012_usage_rollups'
down_revision = '0011_job_metric_summaries'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No backfill here: a job not folded yet is read live (as before), and the dispatcher's
    # housekeeping folds the history a batch a pass.
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('utilization_readings', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('utilization_sum', sa.Float(), nullable=True))
    op.create_index('ix_jobs_unfolded', 'jobs', ['id'], sqlite_where=sa.text('utilization_readings IS NULL'),
                    postgresql_where=sa.text('utilization_readings IS NULL'))
    op.create_table(
        'job_tallies',
        sa.Column('kind', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.String(length=32), nullable=False),
        sa.Column('jobs', sa.BigInteger(), nullable=False),
        sa.Column('started', sa.BigInteger(), nullable=False),
        sa.Column('run_seconds', sa.Float(), nullable=False),
        sa.Column('timed', sa.BigInteger(), nullable=False),
        sa.Column('duration_buckets', sa.JSON(), nullable=False),
        sa.Column('latency_seconds', sa.Float(), nullable=False),
        sa.Column('latency_buckets', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('kind', 'status', 'reason', name=op.f('pk_job_tallies')),
    )


def downgrade() -> None:
    op.drop_table('job_tallies')
    op.drop_index('ix_jobs_unfolded', table_name='jobs')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('utilization_sum')
        batch_op.drop_column('utilization_readings')
