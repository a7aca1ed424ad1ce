"""The record store's first schema: completions and their feedback.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "completions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("completion_id", sa.String(160), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("model_sha", sa.String(64), nullable=True),
        sa.Column("key_hash", sa.String(64), nullable=True),
        sa.Column("prompt_policy", sa.String(8), nullable=False),
        sa.Column("prompt_sha", sa.String(64), nullable=False),
        sa.Column("prompt", sa.JSON, nullable=True),
        sa.Column("sampling", sa.JSON, nullable=False),
        sa.Column("choices", sa.JSON, nullable=False),
    )
    for column in ("completion_id", "created_at", "model_sha", "key_hash", "prompt_sha"):
        op.create_index(f"ix_completions_{column}", "completions", [column])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("completion", sa.Integer, sa.ForeignKey("completions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("rating", sa.Float, nullable=True),
        sa.Column("preferred", sa.Text, nullable=True),
        sa.Column("choice", sa.Integer, nullable=True),
    )
    op.create_index("ix_feedback_completion", "feedback", ["completion"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("completions")
