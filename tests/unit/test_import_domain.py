"""CSV import rules without I/O: format checks, column plans, address normalisation, and the piecewise parser."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.audience import domain
from services.audience.domain import CustomFieldRecord, FieldOption, FieldSpec
from services.audience.import_domain import (
    MAX_LINE_BYTES,
    CsvFormat,
    CsvParser,
    ImportFailure,
    ParsedPiece,
    RejectedRow,
    bind_fields,
    check_format,
    normalise_address,
    plan_columns,
)
from services.common.errors import Violations


def field(field_id: int, name: str, *, list_id: int | None = 1, **settings: object) -> CustomFieldRecord:
    spec = FieldSpec(name=name, is_global=list_id is None, **settings)  # type: ignore[arg-type]
    return CustomFieldRecord(field_id, 7, list_id, spec, datetime(2026, 1, 1, tzinfo=UTC))


CITY = field(5, "City", merge_tag_alias="City")
# Text fields the header rows of these tests name by alias.
TEXT_FIELDS = (
    CITY,
    *(field(10 + i, alias, merge_tag_alias=alias) for i, alias in enumerate(["first", "last", "name"])),
    field(20, "Note", merge_tag_alias="note", field_type="Paragraph text"),
)


def parse(
    data: bytes, fmt: CsvFormat, piece: int = 1 << 20, fields: Sequence[CustomFieldRecord] = TEXT_FIELDS
) -> ParsedPiece:
    """Feeds `data` in pieces of `piece` bytes and returns everything parsed, as one piece."""
    parser = CsvParser(fmt, fields)
    total = ParsedPiece()
    for part in [*(parser.feed(data[i : i + piece]) for i in range(0, len(data), piece)), parser.finish()]:
        total.rows += part.rows
        total.raws += part.raws
        total.rejected += part.rejected
        total.data_rows += part.data_rows
        total.last_row = max(total.last_row, part.last_row)
    return total


def reasons(piece: ParsedPiece) -> dict[int, str]:
    return {r.row_number: r.reason for r in piece.rejected}


HEADER = CsvFormat(header=True)


# --- format and mapping ---------------------------------------------------------------------------------------


def violations_of(fmt: CsvFormat) -> list[tuple[str, str]]:
    found = Violations()
    check_format(fmt, found)
    return [(v.field, v.reason) for v in found.items]


def test_a_default_format_with_a_header_needs_no_mapping() -> None:
    assert violations_of(HEADER) == []


def test_every_bad_part_of_a_format_is_named() -> None:
    fmt = CsvFormat(field_terminator=";;", field_encloser="\n", escaped_by=";x", header=False)
    assert violations_of(fmt) == [
        ("format.field_terminator", "IMPORT_FIELD_TERMINATOR_INVALID"),
        ("format.field_encloser", "IMPORT_FIELD_ENCLOSER_INVALID"),
        ("format.escaped_by", "IMPORT_ESCAPED_BY_INVALID"),
        ("format.mapped_fields", "IMPORT_MAPPED_FIELDS_REQUIRED"),
    ]


@pytest.mark.parametrize(
    ("mapping", "header", "reason"),
    [
        ((("FIELD1", "FirstName"),), False, "IMPORT_EMAIL_NOT_MAPPED"),
        ((("FIELD1", "EmailAddress"), ("FIELD2", "emailaddress")), False, "IMPORT_MAPPING_INVALID"),
        ((("email", "EmailAddress"),), False, "IMPORT_MAPPING_INVALID"),  # names need a header row
        ((("FIELD0", "EmailAddress"),), False, "IMPORT_MAPPING_INVALID"),
        ((("FIELD1", "EmailAddress"), ("FIELD2", "")), False, "IMPORT_MAPPING_INVALID"),
        ((("FIELD1", "EmailAddress"), ("field1", "FirstName")), False, "IMPORT_MAPPING_INVALID"),
    ],
)
def test_bad_mappings_are_refused(mapping: tuple[tuple[str, str], ...], header: bool, reason: str) -> None:
    assert violations_of(CsvFormat(header=header, mapped_fields=mapping)) == [("format.mapped_fields", reason)]


def test_a_header_maps_email_names_and_makes_other_columns_custom_fields() -> None:
    plan = plan_columns(HEADER, ["City", "E-Mail", "first_name", "LastName", "", "Plan"])
    assert (plan.email, plan.first_name, plan.last_name) == (1, 2, 3)
    assert plan.custom == (("City", 0), ("Plan", 5))
    assert plan.width == 6


def test_an_explicit_mapping_names_header_columns_or_positions() -> None:
    fmt = CsvFormat(header=True, mapped_fields=(("Mail", "EmailAddress"), ("FIELD3", "12")))
    plan = plan_columns(fmt, ["x", "mail", "y"])
    assert plan.email == 1 and plan.custom == (("12", 2),)
    with pytest.raises(ImportFailure, match="not in the header"):
        plan_columns(CsvFormat(header=True, mapped_fields=(("Other", "EmailAddress"),)), ["mail"])
    with pytest.raises(ImportFailure, match="beyond"):
        plan_columns(CsvFormat(header=True, mapped_fields=(("FIELD4", "EmailAddress"),)), ["a", "b"])


def test_a_header_without_an_email_column_fails_the_import() -> None:
    with pytest.raises(ImportFailure, match="email"):
        parse(b"name,city\nAnn,Paris\n", HEADER)


# --- addresses ------------------------------------------------------------------------------------------------


ATOM = "abcXYZ019!#$%&'*+-/=?^_`{|}~"
local_parts = st.text(alphabet=ATOM + '. "@\\é', min_size=0, max_size=260)
domains = st.one_of(
    st.sampled_from(["example.com", "EXAMPLE.ORG", "mail.example.co.uk", "localhost", "example", "a.invalid"]),
    st.text(alphabet="abcXYZ019-.", min_size=0, max_size=70),
    st.sampled_from(["xn--bcher-kva.example", "bücher.example", "[127.0.0.1]", "example.com."]),
)


@settings(max_examples=600, deadline=None)
@given(local=local_parts, host=domains, case_insensitive=st.booleans())
def test_addresses_normalise_exactly_like_the_service(local: str, host: str, case_insensitive: bool) -> None:
    if case_insensitive:
        local = "PostMaster"
    address = f"{local}@{host}"
    try:
        expected: str | None = domain.normalise_email(address)[0]
    except ValueError:
        expected = None
    try:
        got: str | None = normalise_address(address)
    except ValueError:
        got = None
    assert got == expected


def test_addresses_are_normalised_and_bad_ones_say_why() -> None:
    assert normalise_address("Ann.Lee@Example.COM") == "Ann.Lee@example.com"
    assert normalise_address("INFO@example.com") == "info@example.com"
    with pytest.raises(ValueError, match="@-sign"):
        normalise_address("not-an-address")


# --- parsing --------------------------------------------------------------------------------------------------


def test_rows_become_copy_tuples_with_row_numbers_counting_the_header() -> None:
    data = b"email,first_name,last_name,city\r\nAnn@Example.com, Ann ,Lee,Paris\r\n"
    parsed = parse(data, HEADER, fields=[CITY])
    # The header's "city" is the City field's alias: its values are stored under the field's ID.
    assert parsed.rows == [(2, "Ann@example.com", "ann@example.com", "Ann", "Lee", "Paris")]
    assert parsed.data_rows == 1 and parsed.last_row == 2 and parsed.rejected == []
    parser = CsvParser(HEADER, [CITY])
    parser.feed(data)
    assert parser.custom_ids == ("5",)


def test_mapped_columns_must_name_fields_the_list_sees_and_fill_every_required_one() -> None:
    company = field(3, "Company", required=True)
    region = field(4, "Region", required=True, default_value="EU")
    shared = field(9, "Shared", list_id=None, required=True, default_value="x")
    with pytest.raises(ImportFailure, match="'nickname' names no custom field"):
        bind_fields(["nickname"], [CITY])
    with pytest.raises(ImportFailure, match="two columns map to custom field 5"):
        bind_fields(["5", "city"], [CITY])
    with pytest.raises(ImportFailure, match=r"custom field 3 \(Company\) is required and no column"):
        bind_fields(["5"], [CITY, company])
    # A list field's default fills a required field no column maps to; a global field's default never does.
    with pytest.raises(ImportFailure, match=r"custom field 9 \(Shared\) is required"):
        bind_fields(["CustomField3"], [company, region, shared])
    bound = bind_fields(["CustomField3", "9"], [company, region, shared])
    assert bound.keys == ("3", "9") and bound.defaults == (("4", "EU"),)
    with pytest.raises(ImportFailure, match="names no custom field"):
        CsvParser(CsvFormat(mapped_fields=(("FIELD1", "EmailAddress"), ("FIELD2", "12"))), [CITY])


def test_each_rows_values_are_checked_as_subscriber_create_enforces_them() -> None:
    fields = [
        field(1, "Company", required=True),
        field(2, "Code", validation_method="Numbers", unique=True),
        field(
            3, "Plan", field_type="Drop down", options=(FieldOption("Basic", "basic"), FieldOption("Pro", "pro"))
        ),
        field(4, "Born", field_type="Date field"),
    ]
    mapping = tuple((f"FIELD{i + 1}", target) for i, target in enumerate(["EmailAddress", "1", "2", "3", "4"]))
    data = (
        b"a@example.com,Acme,12,pro,2001-02-03\n"  # 1 fine
        b"b@example.com, ,12,pro,\n"  # 2 required Company empty
        b"c@example.com,Acme,x1,pro,\n"  # 3 Code fails Numbers
        b"d@example.com,Acme,1,gold,\n"  # 4 not an option
        b"e@example.com,Acme,1,,1999-13-40\n"  # 5 not a date
        b"f@example.com,Acme,,,\n"  # 6 optional values may be empty
    )
    parsed = parse(data, CsvFormat(mapped_fields=mapping), fields=fields)
    assert [row[0] for row in parsed.rows] == [1, 6]
    assert parsed.rows[0][5:] == ("Acme", "12", "pro", "2001-02-03")
    assert reasons(parsed) == {
        2: "custom field 1 (Company) is required",
        3: "custom field 2 (Code) failed its validation (Numbers)",
        4: "custom field 3 (Plan) cannot hold that value: one of 'basic', 'pro'",
        5: "custom field 4 (Born) cannot hold that value: a date YYYY-MM-DD",
    }
    assert parsed.data_rows == 6


def test_every_bad_row_is_rejected_with_its_reason_and_text() -> None:
    data = (
        b"email,first,last\n"
        b"ok@example.com,a,b\n"
        b"not-an-address,a,b\n"
        b"caf\xe9@example.com,a,b\n"
        b"short@example.com,a\n"
        b"long@example.com,a,b,c\n"
        b",a,b\n"
        b'bad"quote@example.com,"a"b,c\n'
        b"nul@example.com,a\x00,b\n"
        b"\n"
        b'"open@example.com,a,b\n'
    )
    parsed = parse(data, HEADER)
    assert [row[0] for row in parsed.rows] == [2]
    got = reasons(parsed)
    assert got[3].startswith("invalid email address")
    assert got[4].startswith("not valid UTF-8 (byte 0xe9")
    assert got[5] == "too few fields (2, expected 3)"
    assert got[6] == "too many fields (4, expected 3)"
    assert got[7] == "missing email address"
    assert got[8].startswith("malformed CSV")
    assert got[9] == "contains a NUL character"
    assert got[11] == "malformed CSV: unterminated quoted field"
    assert 10 not in got  # a blank line is not a row
    assert parsed.data_rows == 1 + len(got)
    raw = {r.row_number: r.raw for r in parsed.rejected}
    assert raw[4] == "caf\\xe9@example.com,a,b\n" and raw[5] == "short@example.com,a\n"


def test_bad_utf8_rejects_only_its_own_row() -> None:
    parsed = parse(b"email\nok1@example.com\n\xff\xfe@example.com\nok2@example.com\n", HEADER)
    assert [row[1] for row in parsed.rows] == ["ok1@example.com", "ok2@example.com"]
    assert list(reasons(parsed)) == [3]


def test_quoted_fields_may_hold_delimiters_quotes_and_line_breaks() -> None:
    data = b'email,first_name,note\n"a@example.com","Lee, Ann","said ""hi""\nthen left"\nb@example.com,Bo,x\n'
    parsed = parse(data, HEADER, piece=3)
    assert parsed.rows == [
        # A Paragraph text field may hold line breaks.
        (2, "a@example.com", "a@example.com", "Lee, Ann", "", 'said "hi"\nthen left'),
        (3, "b@example.com", "b@example.com", "Bo", "", "x"),
    ]


def test_separators_quotes_and_escapes_follow_the_format() -> None:
    fmt = CsvFormat(
        field_terminator=";",
        field_encloser="'",
        escaped_by="\\",
        mapped_fields=(("FIELD2", "EmailAddress"), ("FIELD1", "FirstName")),
    )
    parsed = parse(b"'O\\'Neil; Ann';x@example.com\n", fmt)
    assert parsed.rows == [(1, "x@example.com", "x@example.com", "O'Neil; Ann", "")]


def test_without_a_header_the_first_full_row_fixes_the_width() -> None:
    fmt = CsvFormat(mapped_fields=(("FIELD2", "EmailAddress"),))
    parsed = parse(b"only-one\nAnn,a@example.com,x\nBo,b@example.com\n", fmt)
    assert [row[0] for row in parsed.rows] == [2]
    assert reasons(parsed) == {1: "too few fields (1, expected 2)", 3: "too few fields (2, expected 3)"}


def test_a_byte_order_mark_and_a_last_line_without_a_break_are_fine() -> None:
    parsed = parse(b"\xef\xbb\xbfemail\na@example.com\r\nb@example.com", HEADER, piece=1)
    assert [row[1] for row in parsed.rows] == ["a@example.com", "b@example.com"]


def test_an_endless_line_is_rejected_without_holding_it() -> None:
    parser = CsvParser(HEADER)
    parser.feed(b"email\n")
    rejected: list[RejectedRow] = []
    for _ in range(3):
        rejected += parser.feed(b"x" * (MAX_LINE_BYTES // 2)).rejected
    assert len(parser._pending) == 0
    rest = parser.feed(b"xx\nok@example.com\n")
    rejected += rest.rejected
    assert [(r.row_number, r.reason) for r in rejected] == [(2, f"row longer than {MAX_LINE_BYTES} bytes")]
    assert [row[:2] for row in rest.rows] == [(3, "ok@example.com")]


rows_strategy = st.lists(
    st.tuples(
        st.sampled_from(["a@example.com", "B@Example.org", "bad", "", "c@x.io"]),
        st.text(alphabet='ab ,"\n\r;é', max_size=6),
    ),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(rows=rows_strategy, piece=st.integers(min_value=1, max_value=40), crlf=st.booleans())
def test_pieces_of_any_size_parse_like_the_whole(rows: list[tuple[str, str]], piece: int, crlf: bool) -> None:
    newline = "\r\n" if crlf else "\n"
    lines = ["email,name"] + ['"{}","{}"'.format(e, n.replace('"', '""')) for e, n in rows]
    data = (newline.join(lines) + newline).encode()
    whole, pieces = parse(data, HEADER), parse(data, HEADER, piece=piece)
    assert pieces.rows == whole.rows
    assert pieces.rejected == whole.rejected
    assert pieces.data_rows == whole.data_rows == len(rows)
    assert len(whole.rows) + len(whole.rejected) == len(rows)
