"""`herald subscribers import`: streams a CSV file to the audience service (StreamImport) with a progress bar, then prints the report.

The file is read and sent in 1 MiB pieces, so a file of any size needs no more memory than that;
the service imports while it receives. The command acts as an admin (it holds the token secret,
like every Herald process), and the service attributes the import to the list's owner.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

import grpc
from herald.audience.v1 import audience_pb2, audience_pb2_grpc

from services.common import grpcutil
from services.common.auth import Principal, mint_token
from services.common.config import Settings
from services.common.grpcutil import decode_error

PIECE_BYTES = 1024 * 1024
TOKEN_TTL_SECONDS = 24 * 3600
STATUS_NAMES = {
    audience_pb2.IMPORT_STATUS_PENDING: "Pending",
    audience_pb2.IMPORT_STATUS_RUNNING: "Running",
    audience_pb2.IMPORT_STATUS_COMPLETED: "Completed",
    audience_pb2.IMPORT_STATUS_FAILED: "Failed",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list", dest="list_id", type=int, required=True, help="id of the list to import into")
    parser.add_argument("file", type=Path, help="the CSV file (UTF-8)")
    parser.add_argument("--delimiter", default=",", help="field separator, one character (default ,)")
    parser.add_argument("--quote", default='"', help='quote character (default ")')
    parser.add_argument("--escape", default="", help="escape character inside quotes (default: the quote doubled)")
    parser.add_argument(
        "--no-header", dest="header", action="store_false", help="the first row is data, not column names"
    )
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="COLUMN=FIELD",
        help="map a column (a header name, or FIELD1, FIELD2...) to EmailAddress, FirstName, LastName or a "
        "custom field of the list (its id or alias); repeatable. Default with a header: email/EmailAddress, "
        "first_name/FirstName, last_name/LastName, every other column the custom field whose id or alias its "
        "header is (a column that names no field of the list fails the import)",
    )
    parser.add_argument(
        "--update-duplicates", action="store_true", help="update subscribers already on the list (default: skip)"
    )
    parser.add_argument(
        "--show-rejected",
        type=int,
        default=20,
        metavar="N",
        help="rejected rows listed in the summary (default 20)",
    )


class Progress:
    """Bytes sent of the file's size on stderr: one redrawn line on a terminal, a line per 10% otherwise."""

    def __init__(self, total: int, out: TextIO) -> None:
        self.total = total
        self.out = out
        self.tty = out.isatty()
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_tenth = -1

    def update(self, sent: int) -> None:
        fraction = sent / self.total if self.total else 1.0
        now = time.monotonic()
        rate = sent / max(now - self.started, 1e-6) / 1e6
        text = f"{fraction:6.1%}  {sent / 1e6:,.1f} of {self.total / 1e6:,.1f} MB sent  {rate:,.1f} MB/s"
        if self.tty:
            if now - self._last_draw >= 0.1 or sent >= self.total:
                bar = "#" * int(fraction * 30)
                self.out.write(f"\r[{bar:<30}] {text}")
                self.out.flush()
                self._last_draw = now
        elif int(fraction * 10) > self._last_tenth:
            self._last_tenth = int(fraction * 10)
            self.out.write(text + "\n")
            self.out.flush()

    def done(self, message: str) -> None:
        self.out.write(("\n" if self.tty else "") + message + "\n")
        self.out.flush()


def parse_mapping(items: list[str]) -> dict[str, str]:
    """--map COLUMN=FIELD options as a mapping; ValueError for one without "=" or with an empty side."""
    mapping: dict[str, str] = {}
    for item in items:
        column, sep, target = item.partition("=")
        if not sep or not column.strip() or not target.strip():
            raise ValueError(f"--map {item!r} is not COLUMN=FIELD")
        mapping[column.strip()] = target.strip()
    return mapping


def summary(result: audience_pb2.Import, show_rejected: int) -> dict[str, Any]:
    """The import's report as the command prints it."""
    body: dict[str, Any] = {
        "ImportID": result.import_id,
        "ListID": result.list_id,
        "Status": STATUS_NAMES.get(result.status, "Unknown"),
        "TotalRows": result.total_rows,
        "Imported": result.imported,
        "Updated": result.updated,
        "Duplicates": result.duplicates,
        "Rejected": result.rejected,
    }
    if result.failure:
        body["Failure"] = result.failure
    body["RejectedRows"] = [
        {"RowNumber": r.row_number, "Reason": r.reason, "Raw": r.raw.rstrip("\r\n")}
        for r in result.rejected_rows[: max(show_rejected, 0)]
    ]
    return body


async def stream_file(
    settings: Settings,
    list_id: int,
    path: Path,
    fmt: audience_pb2.CsvFormat,
    update_duplicates: bool,
    progress: Progress,
) -> audience_pb2.Import:
    """Sends the file to StreamImport and returns the finished import."""
    operator = Principal(user_id=0, is_admin=True, service="import")
    token = mint_token(operator, settings.effective_token_secret(), TOKEN_TTL_SECONDS)

    async def requests() -> AsyncIterator[audience_pb2.StreamImportRequest]:
        yield audience_pb2.StreamImportRequest(list_id=list_id, format=fmt, update_duplicates=update_duplicates)
        sent = 0
        with path.open("rb") as source:
            while data := source.read(PIECE_BYTES):
                sent += len(data)
                yield audience_pb2.StreamImportRequest(chunk=data)
                progress.update(sent)
        progress.done("file sent; waiting for the last rows to be written")

    async with grpcutil.channel(
        settings.grpc_addr("audience"),
        forward_principal=False,
        settings=settings,
        options=[("grpc.max_send_message_length", 4 * PIECE_BYTES)],
    ) as channel:
        stub = audience_pb2_grpc.AudienceServiceStub(channel)
        # No deadline: a file of any size takes as long as it takes; the call ends when the import does.
        result: audience_pb2.Import = await stub.StreamImport(
            requests(), metadata=(("authorization", f"Bearer {token}"),), wait_for_ready=True
        )
    return result


def run_import(
    settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """The command: 0 when the import completed (rejected rows are reported, not an error), 1 otherwise."""
    try:
        mapping = parse_mapping(args.map)
        size = args.file.stat().st_size
    except (ValueError, OSError) as exc:
        err.write(json.dumps({"Error": str(exc)}) + "\n")
        return 2
    # A tab is hard to type in a shell: "\t" and "tab" mean one.
    delimiter = "\t" if args.delimiter in ("\\t", "tab") else args.delimiter
    fmt = audience_pb2.CsvFormat(
        field_terminator=delimiter,
        field_encloser=args.quote,
        escaped_by=args.escape,
        header=args.header,
        mapped_fields=mapping,
    )
    progress = Progress(size, err)
    try:
        result = asyncio.run(stream_file(settings, args.list_id, args.file, fmt, args.update_duplicates, progress))
    except grpc.aio.AioRpcError as exc:
        failure = decode_error(exc)
        problem: dict[str, Any] = {"Error": failure.message, "Code": failure.code.name}
        if failure.reason:
            problem["Reason"] = failure.reason
        if failure.violations:
            problem["Violations"] = [
                {"Field": v.field, "Reason": v.reason, "Description": v.description} for v in failure.violations
            ]
        err.write(json.dumps(problem) + "\n")
        return 1
    out.write(json.dumps(summary(result, args.show_rejected), ensure_ascii=False, indent=2) + "\n")
    return 0 if result.status == audience_pb2.IMPORT_STATUS_COMPLETED else 1
