"""jobs.batch_id: the jobs of one POST /jobs/batch (a sweep), listed with GET /jobs?batch=N

Revision ID: 0014_job_batches
Revises: 0013_unfolded_covering
Create Date: 2026-11-30 16:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0014_job_batches'
down_revision = '0013_unfolded_covering'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.add_column(sa.Column('batch_id', sa.Integer(), nullable=True))
    op.create_index('ix_jobs_batch_id_id', 'jobs', ['batch_id', 'id'])


def downgrade() -> None:
    op.drop_index('ix_jobs_batch_id_id', table_name='jobs')
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.drop_column('batch_id')
