"""Parse legacy request bodies and read their case-insensitive parameters with typed, validated accessors."""

from __future__ import annotations

import builtins
import codecs
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Literal

from services.common.flags import FALSE_STRINGS, TRUE_STRINGS

__all__ = [
    "FALSE_STRINGS",
    "INT32_MAX",
    "INT64_MAX",
    "MAX_DEPTH",
    "TRUE_STRINGS",
    "BodyError",
    "ParamError",
    "Params",
    "Problem",
    "UndeclaredParameter",
    "decode_text",
    "holds_lone_surrogate",
    "items_of",
    "legacy_bool",
    "legacy_name",
    "normalise_keys",
    "parse_form",
    "parse_json_body",
]

Problem = Literal["missing", "malformed"]

MAX_DEPTH = 32
"""Deepest nesting of objects/arrays accepted in a body or a JSON-string parameter."""

INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# How a legacy boolean is written (services.common.flags): anything else (outside a strict flag) is false.
# Python's str.strip() and int() also accept Unicode spaces, digits and "_" separators,
# none of which a legacy client sends; only ASCII is treated as numeric.
_ASCII_SPACE = " \t\n\r\f\v"
_INT_RE = re.compile(r"[+-]?[0-9]+")
# More digits than this cannot fit int64 even with leading zeros stripped; checking first
# keeps int() from doing quadratic work (or hitting the int max_str_digits limit).
_MAX_INT_DIGITS = 19
_BRACKET_KEY_RE = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])+)")
_SEGMENT_RE = re.compile(r"\[([^\[\]]*)\]")
_INDEX_RE = re.compile(r"0|[1-9][0-9]{0,17}")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


class ParamError(Exception):
    """A request parameter is missing or malformed; `name` is the lower-cased parameter name."""

    def __init__(self, name: builtins.str, problem: Problem, message: builtins.str | None = None) -> None:
        self.name: builtins.str = name.lower()
        self.problem: Problem = problem
        self.message: builtins.str = message or f"{self.name} is {problem}"
        super().__init__(self.message)


class UndeclaredParameter(Exception):
    """A programming error: a handler read a parameter its command row does not declare.

    The OpenAPI document is generated from the declarations, so it cannot then say what the handler
    reads; the test suite runs every command and finds such a read.
    """

    def __init__(self, name: builtins.str, declared: Iterable[builtins.str]) -> None:
        super().__init__(f"parameter {name.lower()!r} is read but not declared (declared: {sorted(declared)})")


class BodyError(Exception):
    """The request body is not a JSON object (in its charset, within the nesting limit, without lone surrogates)."""


def normalise_keys(value: object) -> object:
    """Return a copy of `value` with every dict key lower-cased at every depth; values keep their case."""
    if isinstance(value, dict):
        return {(k.lower() if isinstance(k, str) else k): normalise_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise_keys(item) for item in value]
    return value


def _index_of(key: str) -> int | None:
    """Return `key` as a list index if it is a canonical non-negative decimal, else None."""
    return int(key) if _INDEX_RE.fullmatch(key) else None


def _listify(value: object) -> object:
    # PHP semantics (which the legacy server had): a bracket group becomes a list only when its
    # keys are exactly 0..n-1; sparse numeric keys such as CustomFields[12] stay an object so
    # that the IDs they carry are not lost.
    if isinstance(value, dict):
        converted = {k: _listify(v) for k, v in value.items()}
        indices = {_index_of(k) for k in converted}
        if converted and indices == set(range(len(converted))):
            return [converted[k] for k in sorted(converted, key=int)]
        return converted
    return value


def parse_form(pairs: Iterable[tuple[str, str]]) -> dict[str, object]:
    """Build a lower-cased nested structure from form fields using PHP-style bracket keys; never raises."""
    data: dict[str, object] = {}
    # Next append index for each nested dict, as `a[]` continues after the highest numeric key.
    next_index: dict[int, int] = {}

    def assign(node: dict[str, object], key: str, value: object) -> None:
        index = _index_of(key)
        if index is not None:
            next_index[id(node)] = max(next_index.get(id(node), 0), index + 1)
        node[key] = value

    for raw_key, value in pairs:
        key = str(raw_key).lower()
        match = _BRACKET_KEY_RE.fullmatch(key)
        segments = _SEGMENT_RE.findall(match.group(2)) if match else []
        if match is None or len(segments) >= MAX_DEPTH:
            data[key] = value
            continue
        node = data
        path: list[str] = [match.group(1), *segments]
        for position, segment in enumerate(path):
            if segment == "":
                segment = str(next_index.get(id(node), 0))
            if position == len(path) - 1:
                assign(node, segment, value)
                break
            child = node.get(segment)
            if not isinstance(child, dict):
                child = {}
                # A replaced dict's id may be reused by this new one; drop its stale counter.
                next_index.pop(id(child), None)
                assign(node, segment, child)
            node = child
    return {k: _listify(v) for k, v in data.items()}


def _depth(value: object) -> int:
    """Return the nesting depth of containers in `value` (a scalar is 0, `{}` is 1)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level + 1)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


# Built once: json.loads with a keyword argument builds a new decoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def holds_lone_surrogate(value: object) -> builtins.bool:
    """Whether a string anywhere in `value` (keys included) holds a UTF-16 surrogate code point.

    A paired escape ("\\ud83d\\ude00") decodes to one astral character, so a surrogate left in a
    decoded string is a lone one. No UTF-8 encoder (gRPC, PostgreSQL, the JSON answer) accepts it,
    and PHP's json_decode refused it too.
    """
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE_RE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _load_json(text: str) -> object:
    """Parse strict JSON (no NaN/Infinity, no lone surrogates) within the nesting limit; ValueError otherwise."""
    try:
        value: object = _DECODER.decode(text)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    if _depth(value) > MAX_DEPTH:
        raise ValueError("JSON nested too deeply")
    if holds_lone_surrogate(value):
        raise ValueError("a string holds an unpaired UTF-16 surrogate")
    return value


# Byte-order marks a body without a declared charset may start with (longest first: UTF-32-LE's
# starts with UTF-16-LE's).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(body: bytes, charset: builtins.str | None) -> builtins.str:
    """A body's text in its declared charset, else UTF-8 (or the encoding its byte-order mark names).

    Raises BodyError for a charset Python does not know as a text encoding, and for bytes that are
    not valid in it.
    """
    if charset:
        encoding = charset
    else:
        encoding = next((name for bom, name in _BOMS if body.startswith(bom)), "utf-8")
    try:
        return body.decode(encoding)
    except LookupError as exc:
        raise BodyError(f"unknown charset {encoding[:40]!a}") from exc
    except ValueError as exc:
        # UnicodeDecodeError, and the other errors odd codecs raise ("undefined", a NUL in the name).
        raise BodyError(f"body is not valid {encoding[:40]!a}") from exc


def parse_json_body(body: bytes, charset: builtins.str | None = None) -> dict[builtins.str, object]:
    """Decode a JSON object body (see decode_text) and lower-case its keys; raises BodyError for anything else."""
    text = decode_text(body, charset)
    try:
        value = _load_json(text)
    except ValueError as exc:
        raise BodyError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BodyError("body is not a JSON object")
    normalised = normalise_keys(value)
    assert isinstance(normalised, dict)
    return normalised


def legacy_bool(value: object) -> builtins.bool:
    """A legacy boolean: true, 1, "1", "true", "yes", "on" (any case) are true; all else is false."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value == 1
    if isinstance(value, str):
        return value.strip(_ASCII_SPACE).lower() in TRUE_STRINGS
    return False


def legacy_name(value: builtins.str) -> builtins.str:
    """A legacy enum value as looked up: case-insensitive, "_" and runs of spaces read as one space."""
    return " ".join(value.replace("_", " ").split()).lower()


def items_of(value: object) -> list[object]:
    """A legacy multi-value parameter's items: a comma-separated string, a list, or one value."""
    if isinstance(value, str):
        return list(value.split(","))
    if isinstance(value, list):
        return list(value)
    return [value]


def _coerce_int(value: object) -> int | None:
    """Return `value` as an int64, or None if it is not an integer in a form the legacy API accepts."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not value.is_integer():
            return None
        number = int(value)
    elif isinstance(value, str):
        text = value.strip(_ASCII_SPACE)
        if not _INT_RE.fullmatch(text) or len(text.lstrip("+-").lstrip("0")) > _MAX_INT_DIGITS:
            return None
        number = int(text)
    else:
        return None
    if not INT64_MIN <= number <= INT64_MAX:
        return None
    return number


class Params:
    """Read-only view of a request's parameters, keyed case-insensitively."""

    def __init__(self, raw: Mapping[builtins.str, object]) -> None:
        normalised = normalise_keys(dict(raw))
        assert isinstance(normalised, dict)
        self._data: dict[builtins.str, object] = normalised
        self._declared: frozenset[builtins.str] | None = None
        self._families: tuple[re.Pattern[builtins.str], ...] = ()

    def __repr__(self) -> builtins.str:
        return f"Params({self._data!r})"

    def declared_only(
        self, names: Iterable[builtins.str], families: Iterable[re.Pattern[builtins.str]] = ()
    ) -> Params:
        """The same parameters, readable only by the (lower-cased) `names` and the names a family's pattern
        matches (`CustomField<ID>`): any other read raises UndeclaredParameter."""
        view = Params({})
        view._data = self._data
        view._declared = frozenset(name.lower() for name in names)
        view._families = tuple(families)
        return view

    def _key(self, name: builtins.str) -> builtins.str:
        key = name.lower()
        if (
            self._declared is not None
            and key not in self._declared
            and not any(family.fullmatch(key) for family in self._families)
        ):
            raise UndeclaredParameter(key, self._declared)
        return key

    def names_in(self, family: re.Pattern[builtins.str]) -> list[builtins.str]:
        """The (lower-cased) names of the parameters given that a declared family's pattern matches, sorted."""
        if self._declared is not None and family not in self._families:
            raise UndeclaredParameter(family.pattern, self._declared)
        return sorted(key for key in self._data if family.fullmatch(key))

    def has(self, name: builtins.str) -> builtins.bool:
        """Return whether `name` is present with a value other than None or ""."""
        value = self._data.get(self._key(name))
        return value is not None and value != ""

    def raw(self, name: builtins.str) -> object | None:
        """Return the value of `name` exactly as received (keys lower-cased), or None."""
        return self._data.get(self._key(name))

    @staticmethod
    def _unless_required(name: builtins.str, required: builtins.bool) -> None:
        if required:
            raise ParamError(name, "missing")

    def str(
        self, name: builtins.str, *, required: builtins.bool = False, max_len: builtins.int = 65535
    ) -> builtins.str | None:
        """Return `name` as a string (numbers are rendered); booleans, objects and lists are malformed."""
        if not self.has(name):
            self._unless_required(name, required)
            return None
        value = self._data[name.lower()]
        if isinstance(value, bool):
            raise ParamError(name, "malformed", f"{name.lower()} must be a string")
        if isinstance(value, int):
            text = str(value)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ParamError(name, "malformed", f"{name.lower()} must be a string")
            text = str(value)
        elif isinstance(value, str):
            text = value
        else:
            raise ParamError(name, "malformed", f"{name.lower()} must be a string")
        if len(text) > max_len:
            raise ParamError(name, "malformed", f"{name.lower()} is longer than {max_len} characters")
        return text

    def int(
        self,
        name: builtins.str,
        *,
        required: builtins.bool = False,
        min: builtins.int | None = None,
        max: builtins.int | None = None,
    ) -> builtins.int | None:
        """Return `name` as an int64 within [min, max]; non-integers and out-of-range values are malformed."""
        if not self.has(name):
            self._unless_required(name, required)
            return None
        number = _coerce_int(self._data[name.lower()])
        if number is None:
            raise ParamError(name, "malformed", f"{name.lower()} must be an integer")
        if (min is not None and number < min) or (max is not None and number > max):
            raise ParamError(name, "malformed", f"{name.lower()} is out of range")
        return number

    def bool(self, name: builtins.str, *, default: builtins.bool) -> builtins.bool:
        """Return `name` as a legacy boolean: true, 1, "1", "true", "yes", "on" are true; all else false."""
        value = self._data.get(self._key(name))
        return default if value is None else legacy_bool(value)

    def int_list(
        self, name: builtins.str, *, required: builtins.bool = False, max_items: builtins.int = 10000
    ) -> list[builtins.int] | None:
        """Return `name` (CSV string, list or one int) as distinct positive int64s in first-seen order."""
        if not self.has(name):
            self._unless_required(name, required)
            return None
        value = self._data[name.lower()]
        if isinstance(value, bool) or not isinstance(value, str | list | int | float):
            raise ParamError(name, "malformed", f"{name.lower()} must be a list of IDs")
        seen: dict[builtins.int, None] = {}
        for item in items_of(value):
            if item is None or (isinstance(item, str) and not item.strip(_ASCII_SPACE)):
                continue
            number = _coerce_int(item)
            if number is None or number <= 0:
                raise ParamError(name, "malformed", f"{name.lower()} must contain only positive integers")
            seen[number] = None
            if len(seen) > max_items:
                raise ParamError(name, "malformed", f"{name.lower()} has more than {max_items} items")
        if not seen:
            self._unless_required(name, required)
            return None
        return list(seen)

    def str_list(self, name: builtins.str, *, required: builtins.bool = False) -> list[builtins.str] | None:
        """Return `name` (a list or a CSV string) as stripped, non-empty strings."""
        if not self.has(name):
            self._unless_required(name, required)
            return None
        value = self._data[name.lower()]
        if not isinstance(value, str | list):
            raise ParamError(name, "malformed", f"{name.lower()} must be a list of strings")
        result: list[builtins.str] = []
        for item in items_of(value):
            if item is None:
                continue
            if isinstance(item, int) and not isinstance(item, bool):
                item = str(item)
            if not isinstance(item, str):
                raise ParamError(name, "malformed", f"{name.lower()} must be a list of strings")
            text = item.strip(_ASCII_SPACE)
            if text:
                result.append(text)
        if not result:
            self._unless_required(name, required)
            return None
        return result

    def obj(self, name: builtins.str) -> Mapping[builtins.str, object] | None:
        """Return `name` as an object with lower-cased keys; a string holding a JSON object also counts."""
        if not self.has(name):
            return None
        value = self._data[name.lower()]
        if isinstance(value, str):
            try:
                value = normalise_keys(_load_json(value))
            except ValueError as exc:
                raise ParamError(name, "malformed", f"{name.lower()} must be an object") from exc
        if not isinstance(value, dict):
            raise ParamError(name, "malformed", f"{name.lower()} must be an object")
        return value

    def json_str(self, name: builtins.str) -> object | None:
        """Return the parsed value of `name`, which must be a string holding JSON (keys keep their case)."""
        if not self.has(name):
            return None
        value = self._data[name.lower()]
        if not isinstance(value, str):
            raise ParamError(name, "malformed", f"{name.lower()} must be a JSON string")
        try:
            return _load_json(value)
        except ValueError as exc:
            raise ParamError(name, "malformed", f"{name.lower()} is not valid JSON") from exc
