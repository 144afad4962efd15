"""import staging: bulk writes stage their rows where readers do not see them

Revision ID: 0003
Revises: 0002_sessions
Create Date: 2026-11-30 12:00:00

Bulk writes (``prefloop import``, ``prefloop queue add``) write in short transactions, so that
annotators keep being served, and stay all-or-nothing: prompts and outputs carry the id of their
``bulk_writes`` row and are hidden while it is ``staging``; tasks wait in ``staged_tasks`` until
the write commits. See ``prefloop.feedback.bulk``.
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002_sessions'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('bulk_writes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=500), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('staged_tasks',
    sa.Column('bulk_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('pos', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('prompt_id', sa.Integer(), nullable=False),
    sa.Column('generation_ids', sa.JSON(), nullable=False),
    sa.Column('overlap', sa.Integer(), nullable=False),
    sa.Column('priority', sa.Float(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('scale_min', sa.Integer(), nullable=True),
    sa.Column('scale_max', sa.Integer(), nullable=True),
    sa.Column('meta', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['prompt_id'], ['prompts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('bulk_id', 'pos')
    )
    with op.batch_alter_table('prompts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bulk_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_prompts_bulk_id'), ['bulk_id'], unique=False)

    with op.batch_alter_table('generations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bulk_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_generations_bulk_id'), ['bulk_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('generations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_generations_bulk_id'))
        batch_op.drop_column('bulk_id')

    with op.batch_alter_table('prompts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_prompts_bulk_id'))
        batch_op.drop_column('bulk_id')

    op.drop_table('staged_tasks')
    op.drop_table('bulk_writes')
