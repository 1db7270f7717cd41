"""CSV imports, the pure part: format and mapping rules, address normalisation, and a parser fed bytes piece by piece.

Nothing here does I/O. The parser turns a byte stream of any size into validated rows ready for
COPY and into rejected rows with their reasons, holding at most one piece of input (plus one
unfinished record) at a time.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from email_validator import EmailNotValidError, validate_email

from services.audience.domain import (
    ONE_LINE_TYPES,
    CustomFieldRecord,
    check_values,
    is_empty,
    passes_validation,
    resolve,
    typed_value,
)
from services.common.errors import Violations

EMAIL: Final = "EmailAddress"
FIRST_NAME: Final = "FirstName"
LAST_NAME: Final = "LastName"
_STANDARD_TARGETS: Final = {t.lower(): t for t in (EMAIL, FIRST_NAME, LAST_NAME)}
_FIELD_KEY = re.compile(r"field([1-9][0-9]{0,4})\Z", re.IGNORECASE)
# Header names that map to the standard fields when no mapping is given, compared lower-cased
# without anything but letters and digits ("E-mail", "email_address", "First Name"...).
_DEFAULT_HEADER_TARGETS: Final = {
    "email": EMAIL,
    "emailaddress": EMAIL,
    "firstname": FIRST_NAME,
    "lastname": LAST_NAME,
}
_NOT_ALNUM = re.compile(r"[^a-z0-9]")
MAX_CUSTOM_FIELDS: Final = 200
MAX_CUSTOM_FIELD_ID: Final = 64
# Longest physical line accepted; a longer one is rejected as a row and skipped, so a file
# without line breaks cannot make the parser hold it all.
MAX_LINE_BYTES: Final = 1024 * 1024
# Rejected rows kept in a report, and how much of each row's text.
MAX_REPORTED_ROWS: Final = 1000
MAX_RAW_CHARS: Final = 1000
_BOM: Final = b"\xef\xbb\xbf"


class ImportFailure(Exception):
    """The data cannot be imported at all (not one bad row): the import ends Failed with this message."""


# --- format and mapping -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CsvFormat:
    """How the rows are read: separators, quoting, header row and the column → field mapping."""

    field_terminator: str = ","
    field_encloser: str = '"'
    # Escape character inside quoted fields; "" (or the encloser) means the encloser doubled.
    escaped_by: str = ""
    header: bool = False
    # (column, target): column is FIELDn or, with a header, a header name; target is EmailAddress,
    # FirstName, LastName or a custom field id.
    mapped_fields: tuple[tuple[str, str], ...] = ()


def _single_char_problem(value: str, *, may_be_empty: bool) -> str:
    if value == "" and may_be_empty:
        return ""
    if len(value) != 1:
        return "must be one character" + (" or empty" if may_be_empty else "")
    if value in "\r\n":
        return "cannot be a line break"
    return ""


def check_format(fmt: CsvFormat, violations: Violations) -> None:
    """Adds a violation for every bad part of the format and mapping (field paths as in CreateImportRequest)."""
    problem = _single_char_problem(fmt.field_terminator, may_be_empty=False)
    if problem:
        violations.add("format.field_terminator", "IMPORT_FIELD_TERMINATOR_INVALID", f"FieldTerminator {problem}")
    problem = _single_char_problem(fmt.field_encloser, may_be_empty=True)
    if not problem and fmt.field_encloser and fmt.field_encloser == fmt.field_terminator:
        problem = "cannot be the FieldTerminator"
    if problem:
        violations.add("format.field_encloser", "IMPORT_FIELD_ENCLOSER_INVALID", f"FieldEncloser {problem}")
    problem = _single_char_problem(fmt.escaped_by, may_be_empty=True)
    if not problem and fmt.escaped_by and fmt.escaped_by == fmt.field_terminator:
        problem = "cannot be the FieldTerminator"
    if problem:
        violations.add("format.escaped_by", "IMPORT_ESCAPED_BY_INVALID", f"EscapedBy {problem}")
    mapping_problem = _mapping_problem(fmt)
    if mapping_problem:
        reason, description = mapping_problem
        violations.add("format.mapped_fields", reason, description)


def _mapping_problem(fmt: CsvFormat) -> tuple[str, str] | None:
    if not fmt.mapped_fields:
        if fmt.header:
            return None  # the header row's names decide (default mapping)
        return ("IMPORT_MAPPED_FIELDS_REQUIRED", "MappedFields is required when the data has no header row")
    columns: set[str] = set()
    targets: set[str] = set()
    custom = 0
    for column, target in fmt.mapped_fields:
        key = column.strip().lower()
        if not key:
            return ("IMPORT_MAPPING_INVALID", "a mapped column has no name")
        if not fmt.header and not _FIELD_KEY.match(key):
            return (
                "IMPORT_MAPPING_INVALID",
                f"column {column!r} is not FIELD1, FIELD2, ... (the data has no header)",
            )
        if key in columns:
            return ("IMPORT_MAPPING_INVALID", f"column {column!r} is mapped twice")
        columns.add(key)
        name = target.strip()
        standard = _STANDARD_TARGETS.get(name.lower())
        if standard is None:
            if not name or len(name) > MAX_CUSTOM_FIELD_ID or not name.isprintable():
                return ("IMPORT_MAPPING_INVALID", f"column {column!r} maps to an invalid field id {target!r}")
            custom += 1
            standard = name
        if standard in targets:
            return ("IMPORT_MAPPING_INVALID", f"two columns map to {standard}")
        targets.add(standard)
    if custom > MAX_CUSTOM_FIELDS:
        return ("IMPORT_MAPPING_INVALID", f"more than {MAX_CUSTOM_FIELDS} custom fields")
    if EMAIL not in targets:
        return ("IMPORT_EMAIL_NOT_MAPPED", "no column is mapped to EmailAddress")
    return None


@dataclass(frozen=True)
class ColumnPlan:
    """Where each field is in a row: column indexes (0-based), and how many fields a row has."""

    email: int
    first_name: int = -1
    last_name: int = -1
    # (custom field id, column index)
    custom: tuple[tuple[str, int], ...] = ()
    # Fields every row must have; None until the first data row fixes it (no header row).
    width: int | None = None

    @property
    def needed(self) -> int:
        """Fields a row needs at least so that every mapped column exists."""
        return 1 + max([self.email, self.first_name, self.last_name, *(i for _, i in self.custom)])

    @property
    def custom_ids(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.custom)


def _column_index(column: str, header: Sequence[str] | None) -> int:
    match = _FIELD_KEY.match(column.strip())
    if match:
        index = int(match.group(1)) - 1
        if header is not None and index >= len(header):
            raise ImportFailure(
                f"column {column} of MappedFields is beyond the header row's {len(header)} columns"
            )
        return index
    assert header is not None  # check_format allows names only with a header
    wanted = column.strip().lower()
    for index, name in enumerate(header):
        if name.strip().lower() == wanted:
            return index
    raise ImportFailure(f"column {column!r} of MappedFields is not in the header row")


def plan_columns(fmt: CsvFormat, header: Sequence[str] | None) -> ColumnPlan:
    """The column plan for a format and, when the data has one, its header row."""
    assignments: list[tuple[str, int]] = []
    if fmt.mapped_fields:
        for column, target in fmt.mapped_fields:
            name = target.strip()
            assignments.append((_STANDARD_TARGETS.get(name.lower(), name), _column_index(column, header)))
    else:
        assert header is not None
        taken: set[str] = set()
        for index, raw_name in enumerate(header):
            name = raw_name.strip()
            if not name:
                continue  # an unnamed column has nowhere to go
            target = _DEFAULT_HEADER_TARGETS.get(_NOT_ALNUM.sub("", name.lower()), name[:MAX_CUSTOM_FIELD_ID])
            if target in taken:
                raise ImportFailure(f"two header columns map to {target}; name one of them differently")
            taken.add(target)
            assignments.append((target, index))
        if EMAIL not in taken:
            raise ImportFailure("no header column names the email address (email or EmailAddress)")
        if len(assignments) - len({EMAIL, FIRST_NAME, LAST_NAME} & taken) > MAX_CUSTOM_FIELDS:
            raise ImportFailure(f"more than {MAX_CUSTOM_FIELDS} custom fields")
    standard = dict(a for a in assignments if a[0] in (EMAIL, FIRST_NAME, LAST_NAME))
    return ColumnPlan(
        email=standard[EMAIL],
        first_name=standard.get(FIRST_NAME, -1),
        last_name=standard.get(LAST_NAME, -1),
        custom=tuple(a for a in assignments if a[0] not in (EMAIL, FIRST_NAME, LAST_NAME)),
        width=len(header) if header is not None else None,
    )


# --- custom fields ------------------------------------------------------------------------------------------


ValueCheck = Callable[[str], str | None]


@dataclass(frozen=True)
class BoundFields:
    """The custom fields an import's columns fill, in the plan's order, and what the writer needs of them."""

    records: tuple[CustomFieldRecord, ...]
    # Defaults a new subscriber gets: the list fields with a default that no column fills.
    defaults: tuple[tuple[str, str], ...]
    # Each record's value check (value_check).
    checks: tuple[ValueCheck, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(record.key for record in self.records)

    @property
    def unique(self) -> tuple[tuple[int, CustomFieldRecord], ...]:
        """(position among the custom values, field) of the unique fields: the writer checks them against the list."""
        return tuple((i, record) for i, record in enumerate(self.records) if record.spec.unique)


def custom_targets(fmt: CsvFormat) -> list[str] | None:
    """The custom field targets of a format's mapping, or None when the header row's names decide them."""
    if not fmt.mapped_fields:
        return None
    return [t.strip() for _, t in fmt.mapped_fields if t.strip().lower() not in _STANDARD_TARGETS]


def bind_fields(targets: Sequence[str], fields: Sequence[CustomFieldRecord]) -> BoundFields:
    """The field each custom target names (its ID, CustomField<ID> or its alias, as subscriber.create takes
    them), or ImportFailure: a target that names no field the list sees, two targets naming one field, or a
    required field that no column fills and that has no list default (every row would fail it)."""
    records: list[CustomFieldRecord] = []
    for target in targets:
        values, unknown = resolve(fields, {target: ""})
        if unknown:
            raise ImportFailure(
                f"{target[:MAX_CUSTOM_FIELD_ID]!r} names no custom field of the list (nor a global one of its "
                "owner): map the column to a field's ID or alias, or create the field first"
            )
        record = next(f for f in fields if f.custom_field_id in values)
        if record in records:
            raise ImportFailure(f"two columns map to custom field {record.key} ({record.spec.name})")
        records.append(record)
    mapped = {record.custom_field_id for record in records}
    for field_ in fields:
        if field_.spec.required and field_.custom_field_id not in mapped:
            if field_.list_id is None or not field_.spec.default_value:
                raise ImportFailure(
                    f"custom field {field_.key} ({field_.spec.name}) is required and no column is mapped to it"
                )
    defaults = tuple(
        (f.key, f.spec.default_value)
        for f in fields
        if f.list_id is not None and f.spec.default_value and f.custom_field_id not in mapped
    )
    return BoundFields(tuple(records), defaults, tuple(value_check(record) for record in records))


def value_check(record: CustomFieldRecord) -> ValueCheck:
    """A check of one (trimmed) value of the field: the value as stored, or None when subscriber.create with
    EnforceRequiredFields would refuse it (required and empty; not of the field's type or options; failing its
    validation rule). A plain one-line text field, the usual case, gets a check of its own: a million rows
    spend seconds in the general one."""
    spec = record.spec
    if spec.field_type in ONE_LINE_TYPES and spec.validation_method == "Disabled":

        def one_line(value: str) -> str | None:
            if not value:
                return None if spec.required else ""
            return None if "\n" in value or "\r" in value else value

        return one_line

    def general(value: str) -> str | None:
        if is_empty(value):
            return None if spec.required else ""
        typed = typed_value(spec, value)
        return typed if typed is not None and passes_validation(spec, typed) else None

    return general


def checked_custom_values(
    fields: Sequence[CustomFieldRecord], bound: BoundFields, values: Sequence[str]
) -> list[str] | str:
    """A row's (trimmed) custom values, in `bound` order, as stored; or the reason the row fails: each value is
    checked as subscriber.create with EnforceRequiredFields checks it (type and options, required, validation
    rule), except uniqueness, which the writer checks against the list set-wise.

    The common case (every value fine) is decided by the fields' value checks; a row with a problem goes to
    check_values itself, so that its reason is exactly subscriber.create's."""
    stored = [check(value) for check, value in zip(bound.checks, values, strict=True)]
    if None not in stored:
        return stored  # type: ignore[return-value]  # no None in it
    checked = check_values(fields, dict(zip(bound.keys, values, strict=True)), enforce=True, form=False)
    if checked.problem is not None:
        return checked.problem.message
    return [checked.values.get(key, "") for key in bound.keys]


# --- addresses ----------------------------------------------------------------------------------------------


class AddressError(ValueError):
    """An address email-validator refuses; the message is email-validator's."""


# email-validator's own dot-atom rule for an ASCII local part (RFC 5322 3.2.3), and the names
# RFC 2142 makes case-insensitive (email-validator lower-cases them).
_DOT_ATOM = re.compile(
    r"[a-zA-Z0-9_!#\$%&'\*\+\-/=\?\^`\{\|\}~]+(?:\.[a-zA-Z0-9_!#\$%&'\*\+\-/=\?\^`\{\|\}~]+)*\Z"
)
_ASCII_HOST = re.compile(r"[A-Za-z0-9.\-]+\Z")
_CASE_INSENSITIVE_MAILBOXES = frozenset(
    {"info", "marketing", "sales", "support", "abuse", "noc", "security", "postmaster", "hostmaster"}
    | {"usenet", "news", "webmaster", "www", "uucp", "ftp"}
)
_domains: dict[str, str] = {}
_DOMAIN_CACHE_SIZE = 100_000


def _normalised_domain(domain: str) -> str:
    """The domain as email-validator normalises it, or "" when only the full check can say (bad or not ASCII)."""
    known = _domains.get(domain)
    if known is None:
        try:
            known = validate_email("a@" + domain, check_deliverability=False).domain
        except EmailNotValidError:
            known = ""
        if not known.isascii():
            known = ""
        if len(_domains) >= _DOMAIN_CACHE_SIZE:
            _domains.clear()
        _domains[domain] = known
    return known


def normalise_address(address: str) -> str:
    """email-validator's normalised form of an address (check_deliverability=False, surrounding
    whitespace ignored, the domain lower-cased: as domain.normalise_email), or AddressError.

    A million rows through email-validator take ~30 s, so the common shape — an ASCII dot-atom local
    part at an ASCII host name — is checked here with email-validator's own rules and each domain is
    validated once; anything else goes to email-validator itself. The results are the same
    (tests/unit/test_import_domain.py checks that with generated addresses).
    """
    address = address.strip()
    at = address.find("@")
    if 0 < at and address.find("@", at + 1) < 0 and len(address) <= 254:
        local, domain = address[:at], address[at + 1 :]
        if _DOT_ATOM.match(local) and _ASCII_HOST.match(domain):
            normal_domain = _normalised_domain(domain)
            if normal_domain:
                if local.lower() in _CASE_INSENSITIVE_MAILBOXES:
                    local = local.lower()
                return local + "@" + normal_domain
    try:
        normalised = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise AddressError(str(exc)) from exc
    # As the service stores every address (domain.normalise_email): the domain lower-cased.
    local, _, domain = normalised.rpartition("@")
    return f"{local}@{domain.lower()}"


def email_key(address: str) -> str:
    """What deduplication and suppression compare: the normalised address lower-cased."""
    return address.lower()


# --- parsing ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RejectedRow:
    """A row that was not imported, and why; raw is the row's text (its first MAX_RAW_CHARS characters)."""

    row_number: int
    reason: str
    raw: str


@dataclass
class ParsedPiece:
    """What one piece of input yielded.

    rows: (row number, address, email key, first name, last name, *custom values), ready for COPY.
    raws: each row's text, parallel to rows (duplicates found later in the database are reported with it).
    last_row: the number of the last record read (header and blank lines count: it is the row
    number a spreadsheet shows).
    """

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    raws: list[str] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    data_rows: int = 0
    last_row: int = 0


def _clip(text: str) -> str:
    return text if len(text) <= MAX_RAW_CHARS else text[:MAX_RAW_CHARS] + "…"


def _reader(lines: Iterator[str], fmt: CsvFormat) -> Iterator[list[str]]:
    quote = fmt.field_encloser or None
    escape = fmt.escaped_by if fmt.escaped_by and fmt.escaped_by != fmt.field_encloser else None
    return csv.reader(
        lines,
        delimiter=fmt.field_terminator,
        quotechar=quote,
        quoting=csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE,
        escapechar=escape,
        doublequote=True,
        # A stray quote inside a field rejects the row instead of guessing what was meant.
        strict=True,
    )


def _last_line_break(data: bytes) -> int:
    # A trailing "\r" may be the first half of "\r\n" split across pieces, so it waits for the next piece.
    return max(data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1))


class CsvParser:
    """Reads CSV rows from bytes fed piece by piece, validating each row; one instance per import.

    Records may span pieces (a quoted field with line breaks); the unfinished one is carried over.
    Each physical line is decoded on its own, so bad UTF-8 rejects only the rows it is in.
    """

    def __init__(self, fmt: CsvFormat, fields: Sequence[CustomFieldRecord] = ()) -> None:
        self.fmt = fmt
        # The custom fields the list sees: each row's custom values are checked against them.
        self.fields = tuple(fields)
        self.bound = BoundFields((), ())
        self.plan: ColumnPlan | None = None if fmt.header else self._planned(None)
        self._pending = b""  # bytes after the last line break
        self._carry: list[str] = []  # lines of a record the previous piece ended inside
        self._carry_problem = ""
        self._started = False
        self._skipping_long_line = False
        self.row_number = 0  # records read so far

    @property
    def custom_ids(self) -> tuple[str, ...]:
        return self.plan.custom_ids if self.plan else ()

    def _planned(self, header: Sequence[str] | None) -> ColumnPlan:
        """The column plan, its custom targets bound to the list's fields (and renamed to their IDs)."""
        plan = plan_columns(self.fmt, header)
        self.bound = bind_fields(plan.custom_ids, self.fields)
        custom = tuple((key, index) for key, (_, index) in zip(self.bound.keys, plan.custom, strict=True))
        return replace(plan, custom=custom)

    def feed(self, data: bytes) -> ParsedPiece:
        """Parses every complete line of the input so far."""
        piece = ParsedPiece()
        if not self._started:
            data = self._pending + data
            self._pending = b""
            if len(data) < len(_BOM) and _BOM.startswith(data):
                self._pending = data
                return piece
            self._started = True
            data = data.removeprefix(_BOM)
        buffer = self._pending + data
        cut = _last_line_break(buffer)
        if cut < 0:
            self._pending = self._clipped_line(buffer, piece)
        else:
            block, self._pending = buffer[: cut + 1], buffer[cut + 1 :]
            if self._skipping_long_line:
                block = self._end_long_line(block)
            self._parse(block, piece, final=False)
            self._pending = self._clipped_line(self._pending, piece)
        piece.last_row = self.row_number
        return piece

    def finish(self) -> ParsedPiece:
        """Parses what is left once the input has ended (a last line without a line break)."""
        piece = ParsedPiece()
        block, self._pending = self._pending, b""
        if self._skipping_long_line:
            block = b""
        if block or self._carry:
            self._parse(block, piece, final=True)
        piece.last_row = self.row_number
        return piece

    def _clipped_line(self, pending: bytes, piece: ParsedPiece) -> bytes:
        """Keeps an unfinished line unless it is longer than MAX_LINE_BYTES: then its row is rejected and skipped."""
        if self._skipping_long_line:
            return b""
        if len(pending) <= MAX_LINE_BYTES:
            return pending
        self.row_number += 1
        piece.data_rows += 1
        raw = pending[:MAX_RAW_CHARS].decode("utf-8", "backslashreplace")
        piece.rejected.append(RejectedRow(self.row_number, f"row longer than {MAX_LINE_BYTES} bytes", _clip(raw)))
        self._skipping_long_line = True
        self._carry, self._carry_problem = [], ""
        return b""

    def _end_long_line(self, block: bytes) -> bytes:
        self._skipping_long_line = False
        first_break = min(i for i in (block.find(b"\n"), block.find(b"\r")) if i >= 0)
        end = first_break + 2 if block[first_break : first_break + 2] == b"\r\n" else first_break + 1
        return block[end:]

    def _decode(self, block: bytes) -> tuple[list[str], dict[int, str]]:
        """The block's lines (line breaks kept) and the problem of each line that has one."""
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            lines: list[str] = []
            problems: dict[int, str] = {}
            for index, raw_line in enumerate(block.splitlines(keepends=True)):
                try:
                    lines.append(raw_line.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    bad = raw_line[exc.start : exc.start + 1].hex()
                    problems[index] = f"not valid UTF-8 (byte 0x{bad} at position {exc.start + 1} of the line)"
                    lines.append(raw_line.decode("utf-8", "backslashreplace"))
            text = ""
        else:
            # str.splitlines would also split at \x0b, \x1c, \u2028...; CSV line breaks are \r, \n, \r\n.
            # StringIO(newline="") splits at \r, \n and \r\n only (str.splitlines would also split
            # at \x0b, \x1c, \u2028...) and keeps the line breaks, which quoted fields contain.
            lines = io.StringIO(text, newline="").readlines()
            problems = {}
        if "\x00" in text or (not text and any("\x00" in line for line in lines)):
            for index, line in enumerate(lines):
                if "\x00" in line:
                    problems.setdefault(index, "contains a NUL character")
        return lines, problems

    def _parse(self, block: bytes, piece: ParsedPiece, *, final: bool) -> None:
        lines, problems = self._decode(block)
        if self._carry:
            shift = len(self._carry)
            problems = {i + shift: p for i, p in problems.items()}
            if self._carry_problem:
                problems[0] = self._carry_problem
            lines = self._carry + lines
            self._carry, self._carry_problem = [], ""
        position = 0
        exhausted = False

        def source() -> Iterator[str]:
            nonlocal position, exhausted
            for line in lines:
                position += 1
                yield line
            exhausted = True

        reader = _reader(source(), self.fmt)
        start = 0
        rows, raws, rejected = piece.rows, piece.raws, piece.rejected
        plan = self.plan
        number = self.row_number
        data_rows = 0
        while True:
            try:
                for fields in reader:
                    end = position
                    number += 1
                    raw = lines[start] if end - start == 1 else "".join(lines[start:end])
                    problem = ""
                    if problems:
                        problem = next((problems[i] for i in range(start, end) if i in problems), "")
                    start = end
                    if not fields and not problem:
                        continue  # a blank line is not a row
                    if plan is None:
                        if problem:
                            raise ImportFailure(f"the header row (row {number}) is unreadable: {problem}")
                        plan = self.plan = self._planned(fields)
                        continue
                    data_rows += 1
                    if problem:
                        rejected.append(RejectedRow(number, problem, _clip(raw)))
                        continue
                    width = plan.width
                    if width is None:
                        if len(fields) >= plan.needed:
                            width = len(fields)
                            plan = self.plan = ColumnPlan(
                                plan.email, plan.first_name, plan.last_name, plan.custom, width
                            )
                        else:
                            width = plan.needed
                    if len(fields) != width:
                        many = "many" if len(fields) > width else "few"
                        reason = f"too {many} fields ({len(fields)}, expected {width})"
                        rejected.append(RejectedRow(number, reason, _clip(raw)))
                        continue
                    address = fields[plan.email]
                    if not address or address.isspace():
                        rejected.append(RejectedRow(number, "missing email address", _clip(raw)))
                        continue
                    try:
                        address = normalise_address(address)
                    except AddressError as exc:
                        rejected.append(RejectedRow(number, f"invalid email address: {exc}", _clip(raw)))
                        continue
                    custom: list[str] | str = [fields[i].strip() for _, i in plan.custom]
                    if custom:
                        custom = checked_custom_values(self.fields, self.bound, custom)
                        if isinstance(custom, str):
                            rejected.append(RejectedRow(number, custom, _clip(raw)))
                            continue
                    rows.append(
                        (
                            number,
                            address,
                            address.lower(),
                            fields[plan.first_name].strip() if plan.first_name >= 0 else "",
                            fields[plan.last_name].strip() if plan.last_name >= 0 else "",
                            *custom,
                        )
                    )
                    raws.append(raw)
                break
            except csv.Error as exc:
                if exhausted and not final:
                    # The piece ended inside a record (a quoted field with a line break): the
                    # record's lines wait for the next piece.
                    self._carry = lines[start:]
                    self._carry_problem = next(
                        (problems[i] for i in range(start, len(lines)) if i in problems), ""
                    )
                    break
                end = position
                number += 1
                data_rows += 1
                raw = "".join(lines[start:end])
                start = end
                message = "unterminated quoted field" if exhausted else str(exc)
                rejected.append(RejectedRow(number, f"malformed CSV: {message}", _clip(raw)))
                if exhausted:
                    break
        self.row_number = number
        piece.data_rows += data_rows
