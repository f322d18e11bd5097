"""the partial index of unfolded jobs holds the columns /metrics' live count and the fold read

Revision ID: 0013_unfolded_covering
Revises: 0012_usage_rollups
Create Date: 2026-11-30 10:50:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0013_unfolded_covering'
down_revision = '0012_usage_rollups'
branch_labels = None
depends_on = None

COLUMNS = ['kind', 'status', 'reason', 'created_at', 'started_at', 'run_seconds', 'finished_at', 'id']
UNFOLDED = sa.text('utilization_readings IS NULL')


def upgrade() -> None:
    op.drop_index('ix_jobs_unfolded', table_name='jobs')
    op.create_index('ix_jobs_unfolded_covering', 'jobs', COLUMNS, sqlite_where=UNFOLDED, postgresql_where=UNFOLDED)


def downgrade() -> None:
    op.drop_index('ix_jobs_unfolded_covering', table_name='jobs')
    op.create_index('ix_jobs_unfolded', 'jobs', ['id'], sqlite_where=UNFOLDED, postgresql_where=UNFOLDED)
