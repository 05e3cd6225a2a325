"""initial schema: users, projects, prompts, responses, comparisons, leases, judgments, drafts,
AI judgments, settings and the append-only audit log.

Revision ID: 0001
Revises: (none)
Create Date: 2026-12-01
"""

from alembic import op
import sqlalchemy as sa

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
  op.create_table('projects', sa.Column('id', sa.Integer(), nullable=False),
                  sa.Column('name', sa.String(length=128), nullable=False),
                  sa.Column('guidelines', sa.Text(), nullable=False),
                  sa.Column('votes_required', sa.Integer(), nullable=False),
                  sa.Column('lease_seconds', sa.Integer(), nullable=False),
                  sa.Column('gold_rate', sa.Double(), nullable=False),
                  sa.Column('created_at', sa.DateTime(), nullable=False),
                  sa.PrimaryKeyConstraint('id', name=op.f('pk_projects')),
                  sa.UniqueConstraint('name', name=op.f('uq_projects_name')))
  op.create_table('settings', sa.Column('key', sa.String(length=64), nullable=False),
                  sa.Column('value', sa.Text(), nullable=False),
                  sa.PrimaryKeyConstraint('key', name=op.f('pk_settings')))
  op.create_table('users', sa.Column('id', sa.Integer(), nullable=False),
                  sa.Column('username', sa.String(length=64), nullable=False),
                  sa.Column('password_hash', sa.String(length=255), nullable=False),
                  sa.Column('role', sa.String(length=16), nullable=False),
                  sa.Column('active', sa.Boolean(), nullable=False),
                  sa.Column('session_token', sa.String(length=64), nullable=False),
                  sa.Column('created_at', sa.DateTime(), nullable=False),
                  sa.CheckConstraint("role IN ('admin', 'labeller')", name=op.f('ck_users_role')),
                  sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
                  sa.UniqueConstraint('username', name=op.f('uq_users_username')))
  op.create_table(
      'audit_log', sa.Column('id', sa.Integer(), nullable=False),
      sa.Column('at', sa.DateTime(), nullable=False),
      sa.Column('user_id', sa.Integer(), nullable=True),
      sa.Column('username', sa.String(length=64), nullable=False),
      sa.Column('ip', sa.String(length=64), nullable=False),
      sa.Column('action', sa.String(length=32), nullable=False),
      sa.Column('detail', sa.JSON(), nullable=False),
      sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                              name=op.f('fk_audit_log_user_id_users'),
                              ondelete='RESTRICT'),
      sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log')))
  op.create_index(op.f('ix_audit_log_action'), 'audit_log', ['action'], unique=False)
  op.create_index(op.f('ix_audit_log_at'), 'audit_log', ['at'], unique=False)
  op.create_index(op.f('ix_audit_log_user_id'), 'audit_log', ['user_id'], unique=False)
  op.create_index(op.f('ix_audit_log_username'), 'audit_log', ['username'], unique=False)
  op.create_table(
      'prompts', sa.Column('id', sa.Integer(), nullable=False),
      sa.Column('project_id', sa.Integer(), nullable=False),
      sa.Column('external_id', sa.String(length=128), nullable=False),
      sa.Column('text', sa.Text(), nullable=True), sa.Column('messages', sa.JSON(), nullable=True),
      sa.Column('created_at', sa.DateTime(), nullable=False),
      sa.ForeignKeyConstraint(['project_id'], ['projects.id'],
                              name=op.f('fk_prompts_project_id_projects'),
                              ondelete='RESTRICT'),
      sa.PrimaryKeyConstraint('id', name=op.f('pk_prompts')),
      sa.UniqueConstraint('project_id', 'external_id', name='uq_prompts_external'))
  op.create_index(op.f('ix_prompts_project_id'), 'prompts', ['project_id'], unique=False)
  op.create_table(
      'responses', sa.Column('id', sa.Integer(), nullable=False),
      sa.Column('prompt_id', sa.Integer(), nullable=False),
      sa.Column('model_name', sa.String(length=128), nullable=False),
      sa.Column('text', sa.Text(), nullable=False),
      sa.Column('author_id', sa.Integer(), nullable=True),
      sa.ForeignKeyConstraint(['author_id'], ['users.id'],
                              name=op.f('fk_responses_author_id_users'),
                              ondelete='RESTRICT'),
      sa.ForeignKeyConstraint(['prompt_id'], ['prompts.id'],
                              name=op.f('fk_responses_prompt_id_prompts'),
                              ondelete='RESTRICT'),
      sa.PrimaryKeyConstraint('id', name=op.f('pk_responses')))
  op.create_index(op.f('ix_responses_author_id'), 'responses', ['author_id'], unique=False)
  op.create_index(op.f('ix_responses_prompt_id'), 'responses', ['prompt_id'], unique=False)
  op.create_table(
      'comparisons', sa.Column('id', sa.Integer(), nullable=False),
      sa.Column('project_id', sa.Integer(), nullable=False),
      sa.Column('prompt_id', sa.Integer(), nullable=False),
      sa.Column('response_a_id', sa.Integer(), nullable=False),
      sa.Column('response_b_id', sa.Integer(), nullable=False),
      sa.Column('gold_label', sa.String(length=8), nullable=True),
      sa.Column('created_at', sa.DateTime(), nullable=False),
      sa.CheckConstraint('response_a_id < response_b_id',
                         name=op.f('ck_comparisons_canonical_order')),
      sa.ForeignKeyConstraint(['project_id'], ['projects.id'],
                              name=op.f('fk_comparisons_project_id_projects'),
                              ondelete='RESTRICT'),
      sa.ForeignKeyConstraint(['prompt_id'], ['prompts.id'],
                              name=op.f('fk_comparisons_prompt_id_prompts'),
                              ondelete='RESTRICT'),
      sa.ForeignKeyConstraint(['response_a_id'], ['responses.id'],
                              name=op.f('fk_comparisons_response_a_id_responses'),
                              ondelete='RESTRICT'),
      sa.ForeignKeyConstraint(['response_b_id'], ['responses.id'],
                              name=op.f('fk_comparisons_response_b_id_responses'),
                              ondelete='RESTRICT'),
      sa.PrimaryKeyConstraint('id', name=op.f('pk_comparisons')),
      sa.UniqueConstraint('response_a_id', 'response_b_id', name='uq_comparisons_pair'))
  op.create_index(op.f('ix_comparisons_project_id'), 'comparisons', ['project_id'], unique=False)
  op.create_index(op.f('ix_comparisons_prompt_id'), 'comparisons', ['prompt_id'], unique=False)
  op.create_index(op.f('ix_comparisons_response_a_id'),
                  'comparisons', ['response_a_id'],
                  unique=False)
  op.create_index(op.f('ix_comparisons_response_b_id'),
                  'comparisons', ['response_b_id'],
                  unique=False)
  op.create_table(
      'ai_judgments', sa.Column('id', sa.Integer(), nullable=False),
      sa.Column('comparison_id', sa.Integer(), nullable=False),
      sa.Column('labeller', sa.String(length=128), nullable=False),
      sa.Column('outcome', sa.String(length=16), nullable=False),
      sa.Column('preferred_response_id', sa.Integer(), nullable=True),
      sa.Column('strength', sa.Integer(), nullable=True),
      sa.Column('created_at', sa.DateTime(), nullable=False),
      sa.ForeignKeyConstraint(['comparison_id'], ['comparisons.id'],
                              name=op.f('fk_ai_judgments_comparison_id_comparisons'),
                              ondelete='RESTRICT'),
      sa.ForeignKeyConstraint(['preferred_response_id'], ['responses.id'],
                              name=op.f('fk_ai_judgments_preferred_response_id_responses'),
                              ondelete='RESTRICT'),
      sa.PrimaryKeyConstraint('id', name=op.f('pk_ai_judgments')),
      sa.UniqueConstraint('comparison_id', 'labeller', name='uq_ai_judgments_once'))
  op.create_index(op.f('ix_ai_judgments_comparison_id'),
                  'ai_judgments', ['comparison_id'],
                  unique=False)
  op.create_index(op.f('ix_ai_judgments_preferred_response_id'),
                  'ai_judgments', ['preferred_response_id'],
                  unique=False)
  op.create_table(
      'assignments', sa.Column('id', sa.Integer(), nullable=False),
      sa.Column('comparison_id', sa.Integer(), nullable=False),
      sa.Column('user_id', sa.Integer(), nullable=False),
      sa.Column('left_response_id', sa.Integer(), nullable=False),
      sa.Column('right_response_id', sa.Integer(), nullable=False),
      sa.Column('leased_at', sa.DateTime(), nullable=False),
      sa.Column('expires_at', sa.DateTime(), nullable=False),
      sa.Column('done', sa.Boolean(), nullable=False),
      sa.ForeignKeyConstraint(['comparison_id'], ['comparisons.id'],
                              name=op.f('fk_assignments_comparison_id_comparisons'),
                              ondelete='RESTRICT'),
      sa.ForeignKeyConstraint(['left_response_id'], ['responses.id'],
                              name=op.f('fk_assignments_left_response_id_responses'),
                              ondelete='RESTRICT'),
      sa.ForeignKeyConstraint(['right_response_id'], ['responses.id'],
                              name=op.f('fk_assignments_right_response_id_responses'),
                              ondelete='RESTRICT'),
      sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                              name=op.f('fk_assignments_user_id_users'),
                              ondelete='RESTRICT'),
      sa.PrimaryKeyConstraint('id', name=op.f('pk_assignments')),
      sa.UniqueConstraint('comparison_id', 'user_id', name='uq_assignments_once'))
  op.create_index(op.f('ix_assignments_comparison_id'),
                  'assignments', ['comparison_id'],
                  unique=False)
  op.create_index(op.f('ix_assignments_left_response_id'),
                  'assignments', ['left_response_id'],
                  unique=False)
  op.create_index(op.f('ix_assignments_right_response_id'),
                  'assignments', ['right_response_id'],
                  unique=False)
  op.create_index(op.f('ix_assignments_user_id'), 'assignments', ['user_id'], unique=False)
  op.create_table(
      'drafts', sa.Column('id', sa.Integer(), nullable=False),
      sa.Column('user_id', sa.Integer(), nullable=False),
      sa.Column('comparison_id', sa.Integer(), nullable=False),
      sa.Column('data', sa.JSON(), nullable=False),
      sa.Column('updated_at', sa.DateTime(), nullable=False),
      sa.ForeignKeyConstraint(['comparison_id'], ['comparisons.id'],
                              name=op.f('fk_drafts_comparison_id_comparisons'),
                              ondelete='RESTRICT'),
      sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                              name=op.f('fk_drafts_user_id_users'),
                              ondelete='RESTRICT'),
      sa.PrimaryKeyConstraint('id', name=op.f('pk_drafts')),
      sa.UniqueConstraint('user_id', 'comparison_id', name='uq_drafts_once'))
  op.create_index(op.f('ix_drafts_comparison_id'), 'drafts', ['comparison_id'], unique=False)
  op.create_index(op.f('ix_drafts_user_id'), 'drafts', ['user_id'], unique=False)
  op.create_table(
      'judgments', sa.Column('id', sa.Integer(), nullable=False),
      sa.Column('assignment_id', sa.Integer(), nullable=False),
      sa.Column('comparison_id', sa.Integer(), nullable=False),
      sa.Column('user_id', sa.Integer(), nullable=False),
      sa.Column('left_response_id', sa.Integer(), nullable=False),
      sa.Column('right_response_id', sa.Integer(), nullable=False),
      sa.Column('outcome', sa.String(length=16), nullable=False),
      sa.Column('preferred_response_id', sa.Integer(), nullable=True),
      sa.Column('strength', sa.Integer(), nullable=True),
      sa.Column('prompt_flags', sa.JSON(), nullable=False),
      sa.Column('skip_reason', sa.String(length=32), nullable=True),
      sa.Column('comment', sa.Text(), nullable=False),
      sa.Column('created_at', sa.DateTime(), nullable=False),
      sa.CheckConstraint("(outcome = 'preferred') = (preferred_response_id IS NOT NULL)",
                         name=op.f('ck_judgments_preferred_iff_outcome')),
      sa.CheckConstraint("outcome IN ('preferred', 'tie', 'both_bad', 'skipped')",
                         name=op.f('ck_judgments_outcome')),
      sa.ForeignKeyConstraint(['assignment_id'], ['assignments.id'],
                              name=op.f('fk_judgments_assignment_id_assignments')),
      sa.ForeignKeyConstraint(['comparison_id'], ['comparisons.id'],
                              name=op.f('fk_judgments_comparison_id_comparisons'),
                              ondelete='RESTRICT'),
      sa.ForeignKeyConstraint(['left_response_id'], ['responses.id'],
                              name=op.f('fk_judgments_left_response_id_responses'),
                              ondelete='RESTRICT'),
      sa.ForeignKeyConstraint(['preferred_response_id'], ['responses.id'],
                              name=op.f('fk_judgments_preferred_response_id_responses'),
                              ondelete='RESTRICT'),
      sa.ForeignKeyConstraint(['right_response_id'], ['responses.id'],
                              name=op.f('fk_judgments_right_response_id_responses'),
                              ondelete='RESTRICT'),
      sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                              name=op.f('fk_judgments_user_id_users'),
                              ondelete='RESTRICT'),
      sa.PrimaryKeyConstraint('id', name=op.f('pk_judgments')),
      sa.UniqueConstraint('assignment_id', name=op.f('uq_judgments_assignment_id')),
      sa.UniqueConstraint('comparison_id', 'user_id', name='uq_judgments_once'))
  op.create_index(op.f('ix_judgments_comparison_id'), 'judgments', ['comparison_id'], unique=False)
  op.create_index(op.f('ix_judgments_left_response_id'),
                  'judgments', ['left_response_id'],
                  unique=False)
  op.create_index(op.f('ix_judgments_preferred_response_id'),
                  'judgments', ['preferred_response_id'],
                  unique=False)
  op.create_index(op.f('ix_judgments_right_response_id'),
                  'judgments', ['right_response_id'],
                  unique=False)
  op.create_index(op.f('ix_judgments_user_id'), 'judgments', ['user_id'], unique=False)
  op.create_table(
      'answer_ratings', sa.Column('id', sa.Integer(), nullable=False),
      sa.Column('judgment_id', sa.Integer(), nullable=False),
      sa.Column('response_id', sa.Integer(), nullable=False),
      sa.Column('acceptable', sa.Boolean(), nullable=False),
      sa.Column('harm_flags', sa.JSON(), nullable=False),
      sa.Column('helpfulness', sa.Integer(), nullable=False),
      sa.CheckConstraint('helpfulness BETWEEN 1 AND 5', name=op.f('ck_answer_ratings_helpfulness')),
      sa.ForeignKeyConstraint(['judgment_id'], ['judgments.id'],
                              name=op.f('fk_answer_ratings_judgment_id_judgments'),
                              ondelete='RESTRICT'),
      sa.ForeignKeyConstraint(['response_id'], ['responses.id'],
                              name=op.f('fk_answer_ratings_response_id_responses'),
                              ondelete='RESTRICT'),
      sa.PrimaryKeyConstraint('id', name=op.f('pk_answer_ratings')),
      sa.UniqueConstraint('judgment_id', 'response_id', name='uq_answer_ratings_once'))
  op.create_index(op.f('ix_answer_ratings_judgment_id'),
                  'answer_ratings', ['judgment_id'],
                  unique=False)
  op.create_index(op.f('ix_answer_ratings_response_id'),
                  'answer_ratings', ['response_id'],
                  unique=False)

  _audit_log_append_only()


def _audit_log_append_only() -> None:
  """The audit log only grows: the database itself refuses UPDATE and DELETE on it."""
  if op.get_context().dialect.name == "sqlite":
    for verb in ("UPDATE", "DELETE"):
      op.execute(f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
                 "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END")
  elif op.get_context().dialect.name == "postgresql":
    op.execute("CREATE FUNCTION audit_log_refuse() RETURNS trigger LANGUAGE plpgsql AS "
               "$$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$")
    op.execute("CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log "
               "FOR EACH ROW EXECUTE FUNCTION audit_log_refuse()")


def downgrade() -> None:
  if op.get_context().dialect.name == "sqlite":
    op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
    op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
  elif op.get_context().dialect.name == "postgresql":
    op.execute("DROP TRIGGER IF EXISTS audit_log_no_change ON audit_log")
    op.execute("DROP FUNCTION IF EXISTS audit_log_refuse()")
  op.drop_index(op.f('ix_answer_ratings_response_id'), table_name='answer_ratings')
  op.drop_index(op.f('ix_answer_ratings_judgment_id'), table_name='answer_ratings')
  op.drop_table('answer_ratings')
  op.drop_index(op.f('ix_judgments_user_id'), table_name='judgments')
  op.drop_index(op.f('ix_judgments_right_response_id'), table_name='judgments')
  op.drop_index(op.f('ix_judgments_preferred_response_id'), table_name='judgments')
  op.drop_index(op.f('ix_judgments_left_response_id'), table_name='judgments')
  op.drop_index(op.f('ix_judgments_comparison_id'), table_name='judgments')
  op.drop_table('judgments')
  op.drop_index(op.f('ix_drafts_user_id'), table_name='drafts')
  op.drop_index(op.f('ix_drafts_comparison_id'), table_name='drafts')
  op.drop_table('drafts')
  op.drop_index(op.f('ix_assignments_user_id'), table_name='assignments')
  op.drop_index(op.f('ix_assignments_right_response_id'), table_name='assignments')
  op.drop_index(op.f('ix_assignments_left_response_id'), table_name='assignments')
  op.drop_index(op.f('ix_assignments_comparison_id'), table_name='assignments')
  op.drop_table('assignments')
  op.drop_index(op.f('ix_ai_judgments_preferred_response_id'), table_name='ai_judgments')
  op.drop_index(op.f('ix_ai_judgments_comparison_id'), table_name='ai_judgments')
  op.drop_table('ai_judgments')
  op.drop_index(op.f('ix_comparisons_response_b_id'), table_name='comparisons')
  op.drop_index(op.f('ix_comparisons_response_a_id'), table_name='comparisons')
  op.drop_index(op.f('ix_comparisons_prompt_id'), table_name='comparisons')
  op.drop_index(op.f('ix_comparisons_project_id'), table_name='comparisons')
  op.drop_table('comparisons')
  op.drop_index(op.f('ix_responses_prompt_id'), table_name='responses')
  op.drop_index(op.f('ix_responses_author_id'), table_name='responses')
  op.drop_table('responses')
  op.drop_index(op.f('ix_prompts_project_id'), table_name='prompts')
  op.drop_table('prompts')
  op.drop_index(op.f('ix_audit_log_username'), table_name='audit_log')
  op.drop_index(op.f('ix_audit_log_user_id'), table_name='audit_log')
  op.drop_index(op.f('ix_audit_log_at'), table_name='audit_log')
  op.drop_index(op.f('ix_audit_log_action'), table_name='audit_log')
  op.drop_table('audit_log')
  op.drop_table('users')
  op.drop_table('settings')
  op.drop_table('projects')
