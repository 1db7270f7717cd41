"""Rows for the modern single-step import (subscribers.import.post, subscribers.import.get; supporting-commands.md §4).

Both are v1-style handlers, served at /api.php and at /api/v1/subscribers.import (POST starts an
import, GET with a query string reads one); errors carry `Errors: [{Code, Message}]` beside the
envelope. The import itself runs in the audience service as a background job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from herald.audience.v1 import audience_pb2

from translator.commands import Args, Command, Context, Param, Problems, instant, unary
from translator.params import FALSE_STRINGS, TRUE_STRINGS, ParamError, Params

RATE_LIMIT = (100, 60.0)
IMPORT_STATUS = {
    audience_pb2.IMPORT_STATUS_PENDING: "Pending",
    audience_pb2.IMPORT_STATUS_RUNNING: "Running",
    audience_pb2.IMPORT_STATUS_COMPLETED: "Completed",
    audience_pb2.IMPORT_STATUS_FAILED: "Failed",
}
# The four required flags, in the order of their codes (4-7 missing, 9-12 invalid).
FLAGS = ("addtoglobalsuppressionlist", "addtosuppressionlist", "updateduplicates", "triggeractions")
# Characters a form field cannot easily carry, written as their usual escapes.
_ESCAPES = {"\\t": "\t", "tab": "\t"}


def strict_flag(args: Args, name: str) -> bool:
    """A required boolean: true/false, 1/0, yes/no, on/off (any case); anything else is malformed."""
    value = args.params.raw(name)
    if value is None or value == "":
        args.problems.append(ParamError(name, "missing"))
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return value == 1
    if isinstance(value, str) and value.strip().lower() in TRUE_STRINGS | FALSE_STRINGS:
        return value.strip().lower() in TRUE_STRINGS
    args.problems.append(ParamError(name, "malformed", f"{name} must be true or false"))
    return False


def _tags(args: Args) -> list[str]:
    """Tags is required but may be empty: an array of names, or a comma-separated string."""
    value = args.params.raw("tags")
    if value is None:
        args.problems.append(ParamError("tags", "missing"))
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str | int) for item in items):
        args.problems.append(ParamError("tags", "malformed", "tags must be an array of tag names"))
        return []
    return [str(item).strip() for item in items if str(item).strip()]


def _csv_source(args: Args) -> Mapping[str, object]:
    """ImportFrom.CSV as an object (also when it arrives as a JSON string); {} when absent."""
    try:
        source = args.params.obj("importfrom") or {}
        csv = source.get("csv")
        if isinstance(csv, str):
            csv = json.loads(csv)
    except (ParamError, ValueError):
        csv = None
    if isinstance(csv, Mapping):
        return csv
    return {}


def _mapped_fields(csv: Params, args: Args) -> dict[str, str]:
    """MappedFields {"FIELD1": "EmailAddress", ...}; older clients send an array of names, FIELD1 first."""
    value = csv.raw("mappedfields")
    if value is None or value == "" or value == {} or value == []:
        args.problems.append(ParamError("mappedfields", "missing"))
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if isinstance(value, list):
        value = {f"field{i + 1}": name for i, name in enumerate(value) if name not in (None, "")}
    if not isinstance(value, Mapping) or not all(
        isinstance(target, str | int) and not isinstance(target, bool) for target in value.values()
    ):
        args.problems.append(
            ParamError("mappedfields", "malformed", "MappedFields must map columns to field names")
        )
        return {}
    return {str(column): str(target) for column, target in value.items()}


def create_import(args: Args) -> audience_pb2.CreateImportRequest:
    list_id = args.int("listid", required=True, min=1)
    flags = [strict_flag(args, name) for name in FLAGS]
    tags = _tags(args)
    csv = Params(_csv_source(args))
    sub = Args(csv)
    terminator = sub.str("fieldterminator", required=True, max_len=8)
    escaped_by = sub.str("escapedby", required=True, max_len=8)
    encloser = sub.str("fieldencloser", max_len=8)
    data = sub.str("data", max_len=64 * 1024 * 1024)
    url = sub.str("url", max_len=4096)
    args.problems += sub.problems
    mapping = _mapped_fields(csv, args)
    if not data and not url and not any(p.name in ("data", "url") for p in sub.problems):
        args.problems.append(ParamError("source", "missing", "ImportFrom.CSV needs URL or Data"))
    global_suppression, list_suppression, update_duplicates, trigger_actions = flags
    return audience_pb2.CreateImportRequest(
        list_id=list_id,
        format=audience_pb2.CsvFormat(
            field_terminator=_ESCAPES.get(terminator.lower(), terminator),
            field_encloser=encloser,
            escaped_by=_ESCAPES.get(escaped_by.lower(), escaped_by),
            # Legacy imports map FIELD1, FIELD2...: every row is data.
            header=False,
            mapped_fields=mapping,
        ),
        data=data,
        source_url=url,
        update_duplicates=update_duplicates,
        # Herald keeps one suppression list per user: both flags put the imported addresses on it.
        add_to_suppression=global_suppression or list_suppression,
        trigger_actions=trigger_actions,
        tags=tags,
        status_webhook_url=args.str("importstatusupdatewebhookurl", max_len=4096),
    )


def render_created(response: audience_pb2.Import, args: Args) -> dict[str, Any]:
    return {"ImportID": response.import_id, "ImportType": "async"}


# The service fetches a URL source before it answers (a fetch failure is code 18), for up to 30 s.
CREATE_TIMEOUT_SECONDS = 60.0


async def start_import(args: Args, ctx: Context) -> dict[str, Any]:
    request = create_import(args)
    if args.problems:
        raise Problems(args.problems)
    response = await replace(ctx, timeout=CREATE_TIMEOUT_SECONDS).call(ctx.stubs.audience.CreateImport, request)
    return render_created(response, args)


def render_job(job: audience_pb2.Import) -> dict[str, Any]:
    """ImportJob: the documented fields, then ListID, TotalUpdated and FailureReason."""
    return {
        "ImportID": job.import_id,
        "ImportDate": instant(job.create_time, is_set=job.HasField("create_time")),
        "FinishedAt": instant(job.finish_time, is_set=job.HasField("finish_time")),
        "ImportStatus": IMPORT_STATUS.get(job.status, "Pending"),
        "FailedData": [{"RowNumber": r.row_number, "Reason": r.reason, "Data": r.raw} for r in job.rejected_rows],
        "TotalSubscribers": job.total_rows,
        # Rows written: new subscribers and updated ones (TotalUpdated says how many were updates).
        "TotalImported": job.imported + job.updated,
        "TotalDuplicates": job.duplicates,
        "TotalFailed": job.rejected,
        "ListID": job.list_id,
        "TotalUpdated": job.updated,
        "FailureReason": job.failure,
    }


def get_import(args: Args) -> audience_pb2.GetImportRequest:
    return audience_pb2.GetImportRequest(
        list_id=args.int("listid", required=True, min=1), import_id=args.int("importid", required=True, min=1)
    )


def render_get(response: audience_pb2.Import, args: Args) -> dict[str, Any]:
    return {"ImportJob": render_job(response)}


POST_CODES = {
    "listid:missing": 1,
    "listid:malformed": 20,
    "LIST_ID_REQUIRED": 1,
    "fieldterminator:missing": 2,
    "fieldterminator:malformed": 2,
    "IMPORT_FIELD_TERMINATOR_INVALID": 2,
    **{f"{name}:missing": code for name, code in zip(FLAGS, (4, 5, 6, 7), strict=True)},
    **{f"{name}:malformed": code for name, code in zip(FLAGS, (9, 10, 11, 12), strict=True)},
    "mappedfields:missing": 8,
    "IMPORT_MAPPED_FIELDS_REQUIRED": 8,
    "mappedfields:malformed": 13,
    "source": 14,
    "data": 14,
    "IMPORT_SOURCE_REQUIRED": 14,
    "IMPORT_SOURCE_CONFLICT": 14,
    "IMPORT_EMAIL_NOT_MAPPED": 15,
    "escapedby:missing": 16,
    "escapedby:malformed": 16,
    "IMPORT_ESCAPED_BY_INVALID": 16,
    "IMPORT_MAPPING_INVALID": 17,
    "fieldencloser": 17,
    "IMPORT_FIELD_ENCLOSER_INVALID": 17,
    "url": 18,
    "IMPORT_SOURCE_FETCH_FAILED": 18,
    "LIST_NOT_FOUND": 19,
    "tags": 21,
    # Issue 14: settings Herald does not implement, refused with their parameter's code and a text saying so.
    "SETTING_UNSUPPORTED@trigger_actions": 12,
    "SETTING_UNSUPPORTED@tags": 21,
    # A double opt-in list sends each imported subscriber its confirmation email; an import that cannot be
    # honoured that way is refused (the list has no confirmation email; the addresses are to be suppressed).
    "IMPORT_CONFIRMATION_EMAIL_MISSING": 20,
    "IMPORT_SUPPRESSION_ON_DOUBLE_OPT_IN": 10,
    # Herald's: a status webhook URL it cannot notify (not absolute http(s), too long, a refused address).
    "importstatusupdatewebhookurl": 22,
    "IMPORT_WEBHOOK_URL_INVALID": 22,
}
POST_CAUSE_TEXTS = {
    "SETTING_UNSUPPORTED@trigger_actions": (
        "TriggerActions is not supported: Herald has no autoresponders or journeys to run; send false"
    ),
    "SETTING_UNSUPPORTED@tags": "Tags is not supported: Herald keeps no subscriber tags; send []",
    "IMPORT_CONFIRMATION_EMAIL_MISSING": (
        "The list is double opt-in but has no confirmation email: imported subscribers could not confirm"
    ),
    "IMPORT_SUPPRESSION_ON_DOUBLE_OPT_IN": (
        "AddToSuppressionList and AddToGlobalSuppressionList must be false for a double opt-in list: its "
        "imported subscribers are sent a confirmation email"
    ),
}
POST_TEXTS = {
    1: "Missing required parameter (ListID)",
    2: "Missing or invalid FieldTerminator",
    4: "Missing required parameter (AddToGlobalSuppressionList)",
    5: "Missing required parameter (AddToSuppressionList)",
    6: "Missing required parameter (UpdateDuplicates)",
    7: "Missing required parameter (TriggerActions)",
    8: "Missing required parameter (MappedFields)",
    9: "Invalid value for AddToGlobalSuppressionList",
    10: "Invalid value for AddToSuppressionList",
    11: "Invalid value for UpdateDuplicates",
    12: "Invalid value for TriggerActions",
    13: "Invalid MappedFields",
    14: "Missing import source (ImportFrom.CSV.URL or ImportFrom.CSV.Data)",
    15: "No column is mapped to EmailAddress",
    16: "Missing or invalid EscapedBy",
    19: "List not found or doesn't belong to user",
    20: "Invalid ListID",
    21: "Missing required parameter (Tags)",
    22: "Invalid ImportStatusUpdateWebhookURL",
}

# Declared parameters and answers (the OpenAPI document; handlers read nothing else) ------------

LIST_ID = Param("ListID", "integer", "ID of the list", required=True)
CSV_SOURCE = (
    Param("URL", "string", "Where the CSV is fetched from (or give Data)", format="uri"),
    Param("Data", "string", "The CSV itself (or give URL)"),
    Param("FieldTerminator", "string", 'Field separator, e.g. "," or "\\t"', required=True),
    Param("EscapedBy", "string", 'Escape character, e.g. "\\\\"', required=True),
    Param("FieldEncloser", "string", "Quote character, e.g. '\"'"),
    Param(
        "MappedFields",
        "object",
        'Columns to fields: {"FIELD1": "EmailAddress", "FIELD2": "<CustomFieldID>"} (or an array of names); a '
        "custom field must be the list's (by ID or alias), and each row's value is checked against it",
        required=True,
    ),
)
POST_PARAMS = (
    LIST_ID,
    *(
        Param(name, "boolean", text, required=True)
        for name, text in (
            (
                "AddToGlobalSuppressionList",
                "Put the imported addresses on the suppression list (true answers 10 on a double opt-in list)",
            ),
            (
                "AddToSuppressionList",
                "Put the imported addresses on the suppression list (true answers 10 on a double opt-in list)",
            ),
            ("UpdateDuplicates", "Update subscribers already on the list (names, custom fields)"),
            ("TriggerActions", "Must be false: Herald has no autoresponders or journeys to run (true answers 12)"),
        )
    ),
    Param(
        "Tags",
        "strings",
        'Must be empty ([] or ""): Herald keeps no subscriber tags (a tag name answers 21)',
        required=True,
    ),
    Param(
        "ImportFrom",
        "object",
        "Where the subscribers come from",
        required=True,
        fields=(Param("CSV", "object", "A CSV file", required=True, fields=CSV_SOURCE),),
    ),
    Param(
        "ImportStatusUpdateWebhookURL",
        "string",
        "Where the import's status (ImportJob's counts, without FailedData) is POSTed as JSON when it finishes: "
        "an absolute http(s) URL at a public address (else 22); a few attempts, and the import stands whatever "
        "the answer",
        format="uri",
    ),
)
IMPORT_JOB = Param(
    "ImportJob",
    "object",
    "ImportID, ImportDate, FinishedAt, ImportStatus, FailedData, TotalSubscribers, TotalImported, TotalDuplicates, "
    "TotalFailed, ListID, TotalUpdated, FailureReason",
    required=True,
)

ROWS = [
    Command(
        "subscribers.import.post",
        start_import,
        permission="Subscribers.Import",
        shape="list",
        codes=POST_CODES,
        texts=POST_TEXTS,
        cause_texts=POST_CAUSE_TEXTS,
        # Served at /api/v1/subscribers.import (registry.V1_PATHS), not under its own name.
        v1_alias=False,
        rate_limit=RATE_LIMIT,
        errors_list=True,
        summary="Start importing a CSV of subscribers into a list (the import runs in the background)",
        params=POST_PARAMS,
        returns=(
            Param("ImportID", "integer", "ID of the import job", required=True),
            Param("ImportType", "string", "Always async", required=True, enum=("async",)),
        ),
    ),
    Command(
        "subscribers.import.get",
        unary(lambda s: s.audience.GetImport, get_import, render_get),
        permission="Subscribers.Import",
        shape="mixed",
        codes={
            "listid:missing": 1,
            "LIST_ID_REQUIRED": 1,
            "importid:missing": 2,
            "IMPORT_ID_REQUIRED": 2,
            "listid:malformed": 3,
            "importid:malformed": 4,
            "LIST_NOT_FOUND": 5,
            "IMPORT_NOT_IN_LIST": 6,
            "IMPORT_NOT_FOUND": 7,
        },
        texts={
            1: "Missing required parameter (ListID)",
            2: "Missing required parameter (ImportID)",
            3: "Invalid ListID",
            4: "Invalid ImportID",
            5: "List not found or doesn't belong to user",
            6: "Invalid ImportID: the import belongs to another list",
            7: "Import job not found",
        },
        v1_alias=False,
        methods=frozenset({"GET", "POST"}),
        rate_limit=RATE_LIMIT,
        errors_list=True,
        summary="An import job's progress and outcome",
        params=(LIST_ID, Param("ImportID", "integer", "ID of the import job", required=True)),
        returns=(IMPORT_JOB,),
    ),
]
