"""indexes for a job page's reads: log lines by type, covering metric index

Revision ID: 0003_first_hour_web
Revises: 0002
Create Date: 2026-11-30 04:30:00
"""
from alembic import op


revision = '0003_first_hour_web'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job_events', schema=None) as batch_op:
        batch_op.create_index('ix_job_events_job_type_seq', ['job_id', 'type', 'seq'], unique=False)
    with op.batch_alter_table('job_metrics', schema=None) as batch_op:
        batch_op.drop_index('ix_job_metrics_job_name')
        batch_op.create_index('ix_job_metrics_job_name_step_value', ['job_id', 'name', 'step', 'value'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('job_metrics', schema=None) as batch_op:
        batch_op.drop_index('ix_job_metrics_job_name_step_value')
        batch_op.create_index('ix_job_metrics_job_name', ['job_id', 'name', 'step'], unique=False)
    with op.batch_alter_table('job_events', schema=None) as batch_op:
        batch_op.drop_index('ix_job_events_job_type_seq')
