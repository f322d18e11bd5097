"""job_metric_summaries: a final job's chart series, downsampled once by the dispatcher's housekeeping

Revision ID: 0011_job_metric_summaries
Revises: 0010_gang_device_ids
Create Date: 2026-11-30 10:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0011_job_metric_summaries'
down_revision = '0010_gang_device_ids'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'job_metric_summaries',
        sa.Column('job_id', sa.Integer(), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('event_seq', sa.Integer(), nullable=False),
        sa.Column('points', sa.Integer(), nullable=False),
        sa.Column('series', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_metric_summaries_job_id_jobs'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('job_id', name=op.f('pk_job_metric_summaries')),
    )


def downgrade() -> None:
    op.drop_table('job_metric_summaries')
