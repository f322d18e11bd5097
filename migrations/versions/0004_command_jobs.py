"""command jobs: bundles, python environments, members' Unix accounts

Revision ID: 0004_command_jobs
Revises: 0003_first_hour_web
Create Date: 2026-11-30 04:10:00
"""
from alembic import op
import sqlalchemy as sa
import service.models


revision = '0004_command_jobs'
down_revision = '0003_first_hour_web'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('bundles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('files', sa.Integer(), nullable=False),
    sa.Column('unpacked_bytes', sa.BigInteger(), nullable=False),
    sa.Column('created_at', service.models.UTCDateTime(), nullable=False),
    sa.Column('last_used_at', service.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_bundles_owner_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bundles')),
    sa.UniqueConstraint('sha256', 'owner_id', name=op.f('uq_bundles_sha256'))
    )
    with op.batch_alter_table('bundles', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bundles_sha256'), ['sha256'], unique=False)

    op.create_table('python_envs',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('created_at', service.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_python_envs'))
    )
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unix_user', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('unix_user')
    op.drop_table('python_envs')
    with op.batch_alter_table('bundles', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bundles_sha256'))
    op.drop_table('bundles')
