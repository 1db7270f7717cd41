"""SQL pieces every store shares: array parameters for id lists and literal text in LIKE patterns."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# The escape character of every LIKE / ILIKE pattern built here: pass it as `escape=LIKE_ESCAPE`.
LIKE_ESCAPE = "\\"


def id_array(ids: Sequence[int]) -> sa.BindParameter[Sequence[int]]:
    """The ids as one bigint[] parameter, for `column = ANY(...)` (`sa.any_`) or `unnest(...)`.

    One array parameter rather than an IN list of one parameter per id: the statement has one plan
    and stays cheap to send whatever the number of ids.
    """
    return sa.bindparam(None, list(ids), type_=postgresql.ARRAY(sa.BigInteger))


def text_array(values: Sequence[str]) -> sa.BindParameter[Sequence[str]]:
    """The strings as one text[] parameter, like id_array."""
    return sa.bindparam(None, list(values), type_=postgresql.ARRAY(sa.Text))


def escape_like(text: str) -> str:
    """`text` with LIKE's wildcards (% and _) and the escape character itself made literal."""
    return (
        text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", LIKE_ESCAPE + "%").replace("_", LIKE_ESCAPE + "_")
    )


def contains_pattern(text: str) -> str:
    """The LIKE pattern of values that contain `text` literally."""
    return f"%{escape_like(text)}%"
