"""services/common/logging.py's RepeatingFailure: a failure that repeats pass after pass is one warning, then at most
one "still failing" line per interval with a count, then one "recovered" line; a traceback only for the first error
of a type that is no outage."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from services.common.logging import RepeatingFailure, describe


class Lines:
    """A structlog-like logger that keeps what it was given."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused() -> psycopg.OperationalError:
    """The error psycopg raises when nothing listens where PostgreSQL should."""
    try:
        psycopg.connect("postgresql://nobody@127.0.0.1:9/none?connect_timeout=2")
    except psycopg.OperationalError as exc:
        return exc
    raise AssertionError("something listens on port 9")


def test_a_failure_every_second_for_three_minutes_is_four_lines_and_a_recovery() -> None:
    log, clock = Lines(), Clock()
    failing = RepeatingFailure("relay pass failed", every=60, clock=clock, logger=log, schema="campaign")
    error = refused()
    for _ in range(181):  # at 0, 1, ..., 180 s
        failing.failed(error)
        clock.now += 1
    failing.recovered()
    failing.recovered()  # no outage any more: nothing to say

    levels = [(level, event) for level, event, _ in log.lines]
    assert levels == [
        ("warning", "relay pass failed"),
        ("warning", "relay pass failed: still failing"),
        ("warning", "relay pass failed: still failing"),
        ("warning", "relay pass failed: still failing"),
        ("info", "relay pass failed: recovered"),
    ]
    first, second, *_, last = (fields for _, _, fields in log.lines)
    assert first["schema"] == "campaign" and first["error"].startswith("OperationalError: ")
    assert first["exc_info"] is None  # an outage's traceback tells nothing
    assert (second["failures"], second["since_seconds"]) == (61, 60.0)
    assert (last["failures"], last["after_seconds"]) == (181, 181.0)


def test_the_next_outage_is_logged_again_from_its_first_failure() -> None:
    log, clock = Lines(), Clock()
    failing = RepeatingFailure("pick pass failed", every=60, clock=clock, logger=log)
    for _ in range(2):
        failing.failed(refused())
        clock.now += 5
        failing.failed(refused())
        failing.recovered()
    assert [event for _, event, _ in log.lines] == ["pick pass failed", "pick pass failed: recovered"] * 2
    assert [fields.get("failures") for _, _, fields in log.lines] == [None, 2, None, 2]


@pytest.mark.parametrize("traceback", [True, False])
def test_an_unexpected_error_carries_its_traceback_the_first_time_it_is_seen_only(traceback: bool) -> None:
    log, clock = Lines(), Clock()
    failing = RepeatingFailure("claim failed", traceback=traceback, every=60, clock=clock, logger=log)
    bug = KeyError("campaign_id")
    failing.failed(bug)
    failing.recovered()
    failing.failed(KeyError("again"))
    tracebacks = [fields.get("exc_info") for level, _, fields in log.lines if level == "warning"]
    assert tracebacks == ([bug, None] if traceback else [None, None])


def test_describe_names_the_drivers_error_and_its_first_line_only() -> None:
    assert describe(ValueError("first line\nsecond line")) == "ValueError: first line"
    assert describe(RuntimeError()) == "RuntimeError"
