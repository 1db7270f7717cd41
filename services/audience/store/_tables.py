"""The audience schema's tables, and the conditions every query of them shares (owner, suppression)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

SCHEMA = "audience"


metadata = sa.MetaData(schema=SCHEMA)


lists = sa.Table(
    "lists",
    metadata,
    sa.Column("list_id", sa.BigInteger, primary_key=True),
    sa.Column("owner_user_id", sa.BigInteger, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("opt_in_mode", sa.Text, nullable=False),
    sa.Column("sender_name", sa.Text, nullable=False),
    sa.Column("sender_email_address", sa.Text, nullable=False),
    sa.Column("sender_company", sa.Text, nullable=False),
    sa.Column("sender_address", sa.Text, nullable=False),
    sa.Column("confirmation_email_id", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("archived_at", sa.DateTime(timezone=True)),
)


subscribers = sa.Table(
    "subscribers",
    metadata,
    sa.Column("subscriber_id", sa.BigInteger, primary_key=True),
    sa.Column("list_id", sa.BigInteger, sa.ForeignKey(lists.c.list_id, ondelete="CASCADE"), nullable=False),
    sa.Column("owner_user_id", sa.BigInteger, nullable=False),
    sa.Column("email_address", sa.Text, nullable=False),
    sa.Column("email_key", sa.Text, nullable=False),
    sa.Column("first_name", sa.Text, nullable=False),
    sa.Column("last_name", sa.Text, nullable=False),
    sa.Column("custom_fields", postgresql.JSONB, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("bounce_type", sa.Text, nullable=False),
    sa.Column("subscription_date", sa.DateTime(timezone=True)),
    sa.Column("subscription_ip", sa.Text, nullable=False),
    sa.Column("unsubscription_date", sa.DateTime(timezone=True)),
    sa.Column("unsubscription_ip", sa.Text, nullable=False),
    sa.Column("optin_date", sa.DateTime(timezone=True)),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("source_ref", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    # Bounces (0003_bounces.sql): the campaigns of the current run of soft bounces, and whether a
    # complaint unsubscribed the subscriber.
    sa.Column("soft_bounce_campaign_ids", postgresql.ARRAY(sa.BigInteger), nullable=False, server_default="{}"),
    sa.Column("unsubscription_channel", sa.Text, nullable=False, server_default=""),
    # Double opt-in (0005_opt_in.sql): when the last confirmation email was asked for, and where the
    # confirm link was opened from.
    sa.Column("opt_in_requested_at", sa.DateTime(timezone=True)),
    sa.Column("optin_ip", sa.Text, nullable=False, server_default=""),
)


segments = sa.Table(
    "segments",
    metadata,
    sa.Column("segment_id", sa.BigInteger, primary_key=True),
    sa.Column("list_id", sa.BigInteger, sa.ForeignKey(lists.c.list_id, ondelete="CASCADE"), nullable=False),
    sa.Column("owner_user_id", sa.BigInteger, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("operator", sa.Text, nullable=False),
    sa.Column("rules", postgresql.JSONB, nullable=False),
    sa.Column("randomness", sa.Boolean, nullable=False),
    sa.Column("randomness_audience_size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)


custom_fields = sa.Table(
    "custom_fields",
    metadata,
    sa.Column("custom_field_id", sa.BigInteger, primary_key=True),
    sa.Column("owner_user_id", sa.BigInteger, nullable=False),
    # NULL for a global field (0004_custom_fields.sql).
    sa.Column("list_id", sa.BigInteger, sa.ForeignKey(lists.c.list_id, ondelete="CASCADE")),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("field_type", sa.Text, nullable=False),
    sa.Column("default_value", sa.Text, nullable=False),
    sa.Column("options", postgresql.JSONB, nullable=False),
    sa.Column("required", sa.Boolean, nullable=False),
    sa.Column("is_unique", sa.Boolean, nullable=False),
    sa.Column("validation_method", sa.Text, nullable=False),
    sa.Column("validation_rule", sa.Text, nullable=False),
    sa.Column("merge_tag_alias", sa.Text, nullable=False),
    sa.Column("visibility", sa.Text, nullable=False),
    sa.Column("first_year", sa.Integer, nullable=False),
    sa.Column("last_year", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)


suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("owner_user_id", sa.BigInteger, primary_key=True),
    sa.Column("email_key", sa.Text, primary_key=True),
    # When the address was suppressed for its current reason.
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    # 'manual', 'bounce' or 'complaint', and the campaign of a bounce or complaint (0 for manual).
    sa.Column("reason", sa.Text, nullable=False, server_default="manual"),
    sa.Column("campaign_id", sa.BigInteger, nullable=False, server_default="0"),
)


def owned_by(column: sa.ColumnElement[Any], owner: int | None) -> sa.ColumnElement[bool]:
    return sa.true() if owner is None else column == owner


def _same_address(table: sa.FromClause) -> sa.ColumnElement[bool]:
    return sa.and_(
        suppressions.c.owner_user_id == table.c.owner_user_id, suppressions.c.email_key == table.c.email_key
    )


def is_suppressed(table: sa.FromClause) -> sa.ColumnElement[bool]:
    """Whether the row's address is on its owner's suppression list."""
    return sa.exists().where(_same_address(table)).correlate(table)


def suppression_reason(table: sa.FromClause) -> sa.ScalarSelect[Any]:
    """Why the row's address is suppressed ('manual', 'bounce', 'complaint'), or NULL when it is not."""
    return sa.select(suppressions.c.reason).where(_same_address(table)).correlate(table).scalar_subquery()
