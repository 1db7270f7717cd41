"""Segment criteria: parses RulesJson (groups, sub-groups, rules) and compiles it into a SQL condition over subscribers.

The structure is an array of groups; a group holds rules and sub-groups; a sub-group holds rules.
`SegmentOperator` is the connector between groups and alternates at each deeper level:
"and" reads groups AND-ed, rules inside a group OR-ed, rules inside a sub-group AND-ed; "or" the
reverse. Parsing is pure; compiling builds a SQLAlchemy expression and never touches a database.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from services.common.errors import DomainError, ErrorKind, FieldViolation
from services.common.sql import LIKE_ESCAPE, contains_pattern, escape_like

RULES_INVALID = "RULES_INVALID"
RULE_TYPE_UNSUPPORTED = "RULE_TYPE_UNSUPPORTED"

# Segments may refer to segments that refer to segments...; deeper than this is refused.
MAX_SEGMENT_DEPTH = 5
MAX_RULES = 500
MAX_VALUE_LENGTH = 1000

AND, OR = "and", "or"

# Rule types the legacy criteria know but Herald has no data for: refusing them is clearer than
# an audience that is silently empty.
UNSUPPORTED_TYPES = {
    "tags": "subscriber tags",
    "tag": "subscriber tags",
    "journeys": "journeys",
    "journey": "journeys",
    "website-events": "website events",
    "websiteevents": "website events",
    "website_events": "website events",
}

# Standard subscriber fields by their legacy names (compared without case, spaces or underscores).
TEXT_FIELDS = {
    "emailaddress": "email_address",
    "email": "email_address",
    "firstname": "first_name",
    "lastname": "last_name",
    "subscriptionip": "subscription_ip",
    "unsubscriptionip": "unsubscription_ip",
    "status": "status",
    "subscriptionstatus": "status",
    "bouncetype": "bounce_type",
    "source": "source",
    "sourceref": "source_ref",
}
TIME_FIELDS = {
    "subscriptiondate": "subscription_date",
    "unsubscriptiondate": "unsubscription_date",
    "optindate": "optin_date",
}
NUMBER_FIELDS = {"subscriberid": "subscriber_id"}
CUSTOM_PREFIX = "custom:"
_CUSTOM_FIELD_RE = re.compile(r"customfield([0-9]{1,18})", re.IGNORECASE)
_CUSTOM_KEY_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

# Operators by every name legacy clients use, compared after lower-casing and collapsing "_" and spaces.
OPERATORS = {
    "is": "eq",
    "equals": "eq",
    "equal": "eq",
    "is equal to": "eq",
    "=": "eq",
    "==": "eq",
    "eq": "eq",
    "is not": "ne",
    "not equals": "ne",
    "does not equal": "ne",
    "is not equal to": "ne",
    "!=": "ne",
    "<>": "ne",
    "ne": "ne",
    "contains": "contains",
    "like": "contains",
    "does not contain": "not_contains",
    "not contains": "not_contains",
    "doesn't contain": "not_contains",
    "not like": "not_contains",
    "begins with": "begins",
    "starts with": "begins",
    "ends with": "ends",
    "is greater than": "gt",
    "greater than": "gt",
    ">": "gt",
    "gt": "gt",
    "is greater than or equal to": "ge",
    "greater than or equal to": "ge",
    "is greater or equal": "ge",
    ">=": "ge",
    "gte": "ge",
    "is smaller than": "lt",
    "is less than": "lt",
    "smaller than": "lt",
    "less than": "lt",
    "<": "lt",
    "lt": "lt",
    "is smaller than or equal to": "le",
    "is less than or equal to": "le",
    "smaller than or equal to": "le",
    "less than or equal to": "le",
    "<=": "le",
    "lte": "le",
    "is set": "set",
    "is not empty": "set",
    "not empty": "set",
    "exists": "set",
    "is not set": "not_set",
    "is empty": "not_set",
    "empty": "not_set",
}
VALUELESS = frozenset({"set", "not_set"})
NUMERIC = frozenset({"gt", "ge", "lt", "le"})
TEXT_ONLY = frozenset({"contains", "not_contains", "begins", "ends"})
SEGMENT_OPERATORS = {
    "belongs to": True,
    "belongs": True,
    "is in": True,
    "in": True,
    "is member of": True,
    "member of": True,
    "does not belong to": False,
    "not belongs to": False,
    "doesn't belong to": False,
    "is not in": False,
    "not in": False,
    "is not member of": False,
    "not member of": False,
}
SUPPRESSION_OPERATORS = {
    "exist": True,
    "exists": True,
    "is suppressed": True,
    "not exist": False,
    "not exists": False,
    "does not exist": False,
    "doesn't exist": False,
    "is not suppressed": False,
}
# A number a text value is compared as: at most 30 digits either side of the point, no exponent,
# so the database cast can never overflow.
_NUMBER_PATTERN = r"^\s*[-+]?([0-9]{1,30}(\.[0-9]{0,30})?|\.[0-9]{1,30})\s*$"
_NUMBER_RE = re.compile(_NUMBER_PATTERN)
_DATE_RE = re.compile(r"\s*([0-9]{4}-[0-9]{2}-[0-9]{2})(?:[ T]([0-9]{2}:[0-9]{2}(?::[0-9]{2})?))?\s*")


@dataclass(frozen=True)
class FieldRule:
    """A condition on a subscriber field: `field` is a column name or "custom:<key>"."""

    field: str
    operator: str
    value: str = ""


@dataclass(frozen=True)
class SegmentRule:
    """Membership of another segment of the same list."""

    segment_id: int
    member: bool


@dataclass(frozen=True)
class SuppressionRule:
    """Whether the address is on the owner's suppression list; None (an unknown operator) matches nobody."""

    exists: bool | None


Rule = FieldRule | SegmentRule | SuppressionRule
# A sub-group is a tuple of rules; a group a tuple of rules and sub-groups.
SubGroup = tuple[Rule, ...]
Group = tuple[Rule | SubGroup, ...]


@dataclass(frozen=True)
class Criteria:
    """Parsed RulesJson: groups of rules and sub-groups, empty groups dropped."""

    groups: tuple[Group, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.groups

    def segment_ids(self) -> set[int]:
        """The segments these criteria refer to."""
        found: set[int] = set()
        for group in self.groups:
            for item in group:
                for rule in item if isinstance(item, tuple) else (item,):
                    if isinstance(rule, SegmentRule):
                        found.add(rule.segment_id)
        return found


def rules_error(message: str, where: str, reason: str = RULES_INVALID) -> DomainError:
    return DomainError(ErrorKind.INVALID, reason, message, [FieldViolation(where, reason, message)])


def _words(value: str) -> str:
    """An operator or type name as looked up: lower-case, "_" read as a space, runs of spaces as one."""
    return " ".join(value.replace("_", " ").split()).lower()


def custom_field_key(raw: str) -> str | None:
    """The key a custom field is stored under: "CustomField12" and "12" are both "12"; None if unusable."""
    text = raw.strip()
    match = _CUSTOM_FIELD_RE.fullmatch(text)
    if match:
        return str(int(match.group(1)))
    if text.isdigit():
        return str(int(text)) if len(text) <= 18 else None
    return text if _CUSTOM_KEY_RE.fullmatch(text) else None


def field_column(raw: str) -> str | None:
    """The column (or "custom:<key>") a rule's field_id names; None when it names nothing."""
    compact = raw.replace(" ", "").replace("_", "").lower()
    for table in (TEXT_FIELDS, TIME_FIELDS, NUMBER_FIELDS):
        if compact in table:
            return table[compact]
    key = custom_field_key(raw)
    return CUSTOM_PREFIX + key if key is not None else None


def _scalar_text(value: object) -> str | None:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    if isinstance(value, str):
        return value
    return None


def _lowered(rule: Mapping[Any, Any]) -> dict[str, object]:
    return {str(key).lower(): value for key, value in rule.items()}


def parse_time_value(text: str) -> tuple[datetime, bool] | None:
    """A rule's date value as a UTC instant and whether it names a whole day ("2025-01-31")."""
    match = _DATE_RE.fullmatch(text)
    if not match:
        return None
    day, clock = match.groups()
    try:
        if clock is None:
            return datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC), True
        fmt = "%Y-%m-%d %H:%M:%S" if clock.count(":") == 2 else "%Y-%m-%d %H:%M"
        return datetime.strptime(f"{day} {clock}", fmt).replace(tzinfo=UTC), False
    except ValueError:
        return None


def _parse_field_rule(rule: dict[str, object], where: str) -> FieldRule:
    raw_field = rule.get("field_id", rule.get("field"))
    field_text = _scalar_text(raw_field) if raw_field is not None else None
    if not field_text or not field_text.strip():
        raise rules_error(f"{where}: a fields rule needs a field_id", where)
    column = field_column(field_text)
    if column is None:
        raise rules_error(f"{where}: field_id {field_text!r} names no subscriber field or custom field", where)
    raw_operator = rule.get("operator")
    operator = OPERATORS.get(_words(raw_operator)) if isinstance(raw_operator, str) else None
    if operator is None:
        raise rules_error(f"{where}: {raw_operator!r} is not an operator of fields rules", where)
    if operator in VALUELESS:
        return FieldRule(column, operator)
    value = _scalar_text(rule.get("value"))
    if value is None:
        raise rules_error(f"{where}: operator {raw_operator!r} needs a text or number value", where)
    if len(value) > MAX_VALUE_LENGTH:
        raise rules_error(f"{where}: value is longer than {MAX_VALUE_LENGTH} characters", where)
    if "\x00" in value:
        raise rules_error(f"{where}: value must not contain NUL characters", where)
    if column in TIME_FIELDS.values():
        if operator in TEXT_ONLY:
            raise rules_error(f"{where}: operator {raw_operator!r} does not apply to a date field", where)
        if parse_time_value(value) is None:
            raise rules_error(f"{where}: {value!r} is not a date (YYYY-MM-DD or YYYY-MM-DD HH:MM:SS)", where)
    elif operator in NUMERIC or column in NUMBER_FIELDS.values():
        if operator not in TEXT_ONLY and not _NUMBER_RE.fullmatch(value):
            raise rules_error(f"{where}: operator {raw_operator!r} needs a number, not {value!r}", where)
    return FieldRule(column, operator, value.strip() if operator in NUMERIC else value)


def _parse_segment_rule(rule: dict[str, object], where: str) -> SegmentRule:
    raw_operator = rule.get("operator")
    member = SEGMENT_OPERATORS.get(_words(raw_operator)) if isinstance(raw_operator, str) else None
    if member is None:
        raise rules_error(f"{where}: {raw_operator!r} is not an operator of segments rules", where)
    value = _scalar_text(rule.get("value"))
    if value is None or not value.strip().isdigit() or len(value.strip()) > 18 or int(value) <= 0:
        raise rules_error(f"{where}: a segments rule's value must be a segment id", where)
    return SegmentRule(int(value), member)


def _parse_rule(raw: object, where: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise rules_error(f"{where}: a rule must be an object with type, operator and value", where)
    rule = _lowered(raw)
    raw_type = rule.get("type")
    if not isinstance(raw_type, str) or not raw_type.strip():
        raise rules_error(f"{where}: the rule has no type", where)
    rule_type = _words(raw_type).replace(" ", "-")
    if rule_type in ("fields", "field"):
        return _parse_field_rule(rule, where)
    if rule_type in ("segments", "segment"):
        return _parse_segment_rule(rule, where)
    if rule_type in ("suppressions", "suppression"):
        raw_operator = rule.get("operator")
        exists = SUPPRESSION_OPERATORS.get(_words(raw_operator)) if isinstance(raw_operator, str) else None
        # Since 5.9.4 a missing or unknown operator matches nobody (it used to invert silently).
        return SuppressionRule(exists)
    if rule_type in UNSUPPORTED_TYPES or rule_type.replace("-", "") in UNSUPPORTED_TYPES:
        what = UNSUPPORTED_TYPES.get(rule_type) or UNSUPPORTED_TYPES[rule_type.replace("-", "")]
        raise rules_error(
            f"{where}: {raw_type!r} rules are not supported: Herald keeps no {what}", where, RULE_TYPE_UNSUPPORTED
        )
    raise rules_error(f"{where}: unknown rule type {raw_type!r}", where)


def parse_criteria(raw: object, *, where: str = "rules", require_rule: bool = False) -> Criteria:
    """Parses RulesJson (already decoded) into Criteria; RULES_INVALID names what is wrong and where.

    `require_rule`: at least one rule must be present (bulk unsubscribe and delete, where an
    empty value must never select the whole list).
    """
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise rules_error(f"{where} must be an array of groups", where)
    groups: list[Group] = []
    count = 0
    for g, raw_group in enumerate(raw):
        group_where = f"{where}[{g}]"
        if not isinstance(raw_group, Sequence) or isinstance(raw_group, str | bytes):
            raise rules_error(f"{group_where} must be an array of rules", group_where)
        items: list[Rule | SubGroup] = []
        for i, raw_item in enumerate(raw_group):
            item_where = f"{group_where}[{i}]"
            if isinstance(raw_item, Sequence) and not isinstance(raw_item, str | bytes):
                sub: list[Rule] = []
                for r, raw_rule in enumerate(raw_item):
                    rule_where = f"{item_where}[{r}]"
                    if isinstance(raw_rule, Sequence) and not isinstance(raw_rule, str | bytes):
                        raise rules_error(
                            f"{rule_where}: only groups, sub-groups and rules are evaluated (three levels)",
                            rule_where,
                        )
                    sub.append(_parse_rule(raw_rule, rule_where))
                if sub:
                    items.append(tuple(sub))
                count += len(sub)
            else:
                items.append(_parse_rule(raw_item, item_where))
                count += 1
            if count > MAX_RULES:
                raise rules_error(f"{where} holds more than {MAX_RULES} rules", where)
        if items:
            groups.append(tuple(items))
    if require_rule and count == 0:
        raise rules_error(f"{where} must hold at least one rule with a type", where)
    return Criteria(tuple(groups))


def parse_operator(raw: str, *, where: str = "operator") -> str:
    """ "and" or "or" (any case); RULES_INVALID otherwise."""
    operator = raw.strip().lower()
    if operator not in (AND, OR):
        raise rules_error(f"{where} must be and or or, not {raw!r}", where)
    return operator


def other(operator: str) -> str:
    return OR if operator == AND else AND


T = TypeVar("T")


def fold(
    criteria: Criteria,
    operator: str,
    leaf: Callable[[Rule], T],
    all_of: Callable[[list[T]], T],
    any_of: Callable[[list[T]], T],
    empty: T,
) -> T:
    """Combines the rules with the connectors of each depth: `operator` between groups, the other one
    inside a group, `operator` again inside a sub-group. Empty criteria give `empty`."""

    def join(connector: str, parts: list[T]) -> T:
        return parts[0] if len(parts) == 1 else (all_of(parts) if connector == AND else any_of(parts))

    if criteria.is_empty:
        return empty
    inner = other(operator)
    groups = []
    for group in criteria.groups:
        parts = [
            join(operator, [leaf(rule) for rule in item]) if isinstance(item, tuple) else leaf(item)
            for item in group
        ]
        groups.append(join(inner, parts))
    return join(operator, groups)


# --- compiling to SQL --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentDefinition:
    """What a segment selects: its list's subscribers matching its criteria (a sample of them with randomness)."""

    segment_id: int
    list_id: int
    operator: str
    criteria: Criteria
    randomness: bool = False
    audience_size: int = 0


class Compiler:
    """Builds conditions over a subscribers table (or alias) for criteria of one list.

    `segments` are the list's segments by id, for segments rules; a segment that no longer exists
    has no members.
    """

    def __init__(
        self,
        subscribers: sa.Table,
        suppressions: sa.Table,
        segments: Mapping[int, SegmentDefinition],
    ) -> None:
        self._subscribers = subscribers
        self._suppressions = suppressions
        self._segments = segments

    def condition(
        self, criteria: Criteria, operator: str, table: sa.FromClause, *, depth: int = 0
    ) -> sa.ColumnElement[bool]:
        """The criteria as a boolean over `table`'s row; no criteria match every row."""
        if depth > MAX_SEGMENT_DEPTH:
            raise rules_error(f"segments refer to segments more than {MAX_SEGMENT_DEPTH} levels deep", "rules")
        return fold(
            criteria,
            operator,
            lambda rule: self._rule(rule, table, depth),
            lambda parts: sa.and_(*parts),
            lambda parts: sa.or_(*parts),
            sa.true(),
        )

    def membership(
        self, segment: SegmentDefinition, table: sa.FromClause, *, depth: int = 0
    ) -> sa.ColumnElement[bool]:
        """Whether `table`'s row (a subscriber of the segment's list) is in the segment."""
        matches = self.condition(segment.criteria, segment.operator, table, depth=depth)
        if not (segment.randomness and segment.audience_size > 0):
            return matches
        # A random audience must be the same for a count and the stream that follows, so the sample
        # is an ordering by a hash of (segment, subscriber), not random(). It is drawn from those who
        # can receive mail at all: Subscribed and not suppressed.
        sample = self._subscribers.alias(f"sample{depth}_{segment.segment_id}")
        chosen = (
            sa.select(sample.c.subscriber_id)
            .where(
                sample.c.list_id == segment.list_id,
                sample.c.status == "Subscribed",
                ~self._rule(SuppressionRule(True), sample, depth),
                self.condition(segment.criteria, segment.operator, sample, depth=depth),
            )
            .order_by(sa.func.md5(sa.func.concat(str(segment.segment_id), ":", sample.c.subscriber_id)))
            .limit(segment.audience_size)
        )
        return table.c.subscriber_id.in_(chosen.scalar_subquery())

    def _rule(self, rule: Rule, table: sa.FromClause, depth: int) -> sa.ColumnElement[bool]:
        if isinstance(rule, SuppressionRule):
            if rule.exists is None:
                return sa.false()
            found = (
                sa.exists()
                .where(
                    self._suppressions.c.owner_user_id == table.c.owner_user_id,
                    self._suppressions.c.email_key == table.c.email_key,
                )
                .correlate(table)
            )
            return found if rule.exists else ~found
        if isinstance(rule, SegmentRule):
            segment = self._segments.get(rule.segment_id)
            if segment is None:
                # Nobody belongs to a segment that was deleted.
                return sa.false() if rule.member else sa.true()
            inside = sa.and_(table.c.list_id == segment.list_id, self.membership(segment, table, depth=depth + 1))
            return inside if rule.member else ~inside
        return self._field(rule, table)

    def _field(self, rule: FieldRule, table: sa.FromClause) -> sa.ColumnElement[bool]:
        if rule.field.startswith(CUSTOM_PREFIX):
            key = rule.field.removeprefix(CUSTOM_PREFIX)
            return _text_condition(
                table.c.custom_fields.op("->>", return_type=sa.Text)(sa.literal(key, sa.Text)), rule
            )
        column = table.c[rule.field]
        if rule.field in TIME_FIELDS.values():
            return _time_condition(column, rule)
        if rule.field in NUMBER_FIELDS.values():
            if rule.operator in TEXT_ONLY:
                return _text_condition(sa.cast(column, sa.Text), rule)
            return _number_condition(column, rule)
        if rule.field == "email_address" and rule.operator in ("eq", "ne"):
            # email_key is what addresses are compared by everywhere else.
            same = table.c.email_key == rule.value.strip().lower()
            return same if rule.operator == "eq" else ~same
        return _text_condition(column, rule)


def _text_condition(column: sa.ColumnElement[Any], rule: FieldRule) -> sa.ColumnElement[bool]:
    text = sa.func.coalesce(column, "")
    value = rule.value
    match rule.operator:
        case "eq":
            return sa.func.lower(text) == value.lower()
        case "ne":
            return sa.func.lower(text) != value.lower()
        case "contains":
            return text.ilike(contains_pattern(value), escape=LIKE_ESCAPE)
        case "not_contains":
            return ~text.ilike(contains_pattern(value), escape=LIKE_ESCAPE)
        case "begins":
            return text.ilike(f"{escape_like(value)}%", escape=LIKE_ESCAPE)
        case "ends":
            return text.ilike(f"%{escape_like(value)}", escape=LIKE_ESCAPE)
        case "set":
            return text != ""
        case "not_set":
            return text == ""
    # Text holding a number compares as a number; anything else (and no value) matches nothing.
    number = sa.case((text.op("~")(_NUMBER_PATTERN), sa.cast(text, postgresql.NUMERIC)), else_=sa.null())
    return _compare(number, rule.operator, sa.literal(Decimal(value), postgresql.NUMERIC))


def _number_condition(column: sa.ColumnElement[Any], rule: FieldRule) -> sa.ColumnElement[bool]:
    if rule.operator == "set":
        return column.is_not(None)
    if rule.operator == "not_set":
        return column.is_(None)
    try:
        value = Decimal(rule.value)
    except InvalidOperation as exc:  # parse_criteria already checked it; kept for direct callers
        raise rules_error(f"{rule.value!r} is not a number", "rules") from exc
    return _compare(sa.cast(column, postgresql.NUMERIC), rule.operator, sa.literal(value, postgresql.NUMERIC))


def _compare(left: sa.ColumnElement[Any], operator: str, right: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    match operator:
        case "eq":
            return left == right
        case "ne":
            return sa.func.coalesce(left != right, sa.true())
        case "gt":
            return left > right
        case "ge":
            return left >= right
        case "lt":
            return left < right
    return left <= right


def _time_condition(column: sa.ColumnElement[Any], rule: FieldRule) -> sa.ColumnElement[bool]:
    if rule.operator == "set":
        return column.is_not(None)
    if rule.operator == "not_set":
        return column.is_(None)
    parsed = parse_time_value(rule.value)
    if parsed is None:
        raise rules_error(f"{rule.value!r} is not a date", "rules")
    start, whole_day = parsed
    # A date alone names the whole day (UTC): "is 2025-01-31" is any time that day, "> 2025-01-31"
    # starts the next day.
    end = start + (timedelta(days=1) if whole_day else timedelta(seconds=1))
    start_at = sa.literal(start, sa.DateTime(timezone=True))
    end_at = sa.literal(end, sa.DateTime(timezone=True))
    match rule.operator:
        case "eq":
            return sa.and_(column >= start_at, column < end_at)
        case "ne":
            return sa.or_(column.is_(None), column < start_at, column >= end_at)
        case "gt":
            return column >= end_at
        case "ge":
            return column >= start_at
        case "lt":
            return column < start_at
    return column < end_at
