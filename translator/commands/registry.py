"""Every served legacy command by lower-cased name; a command not listed here answers 100003 until its issue lands."""

from __future__ import annotations

from translator.commands import (
    Command,
    archive,
    audience,
    campaign,
    delivery,
    email,
    identity,
    imports,
    recipients,
    tag,
)

# /api/v1 paths that are no command's own name: one path serves two commands, told apart by the
# HTTP method (supporting-commands.md §0 and §4).
V1_PATHS: dict[tuple[str, str], str] = {
    ("subscribers.import", "POST"): "subscribers.import.post",
    ("subscribers.import", "GET"): "subscribers.import.get",
}


def all_commands() -> dict[str, Command]:
    rows = [
        *identity.ROWS,
        *tag.ROWS,
        *campaign.ROWS,
        *archive.ROWS,
        *email.ROWS,
        *audience.ROWS,
        *imports.ROWS,
        *delivery.ROWS,
        *recipients.ROWS,
    ]
    table = {row.name.lower(): row for row in rows}
    if len(table) != len(rows):
        raise RuntimeError("two command rows share a name")
    return table
