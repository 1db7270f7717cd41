"""Structured logging for every process: JSON lines with the request, user and campaign ids bound where known."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import structlog

from services.common import tracing


def configure_logging(
    level: str = "INFO", fmt: str = "json", process: str = "herald", *, trace_ids: bool = False
) -> None:
    """Routes stdlib and structlog records through one renderer on stderr; with `trace_ids` (tracing is on), a line
    written inside a span carries its trace_id and span_id."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.CallsiteParameterAdder({structlog.processors.CallsiteParameter.MODULE}),
    ]
    if trace_ids:
        shared.append(tracing.add_trace_ids)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        # Calls below the level return at once, before any processor runs: debug logs on hot paths are free.
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                lambda _, __, event: {**event, "process": process},
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log repeats what our middleware logs with more context.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


# How often a repeating failure is logged again (HERALD_LOG_REPEAT_SECONDS; set by `herald serve`).
repeat_seconds = 60.0


def describe(exc: BaseException) -> str:
    """An error for a log line: the driver's own message (SQLAlchemy wraps it, with the statement) and its type."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()
    return f"{type(original).__name__}: {text[0]}" if text else type(original).__name__


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says PostgreSQL or NATS cannot be reached: an outage, whose traceback tells nothing."""
    from services.common.db import is_connection_failure
    from services.common.natsutil import NATS_UNREACHABLE

    return is_connection_failure(exc) or isinstance(exc, NATS_UNREACHABLE)


class RepeatingFailure:
    """The log of a background loop's failures that repeat pass after pass (PostgreSQL or NATS away).

    The first failure of an outage is one warning with the error (with its traceback the first time this
    error type is seen, when `traceback` is set and the error is no outage of PostgreSQL or NATS, whose
    traceback tells nothing); later failures are counted, and at most one "still failing"
    line per `repeat_seconds` says how many there were since when; the first success after failures logs
    one "recovered" line. Without failures, `recovered` costs nothing.
    """

    def __init__(
        self,
        what: str,
        /,
        *,
        traceback: bool = False,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        logger: Any = None,
        **context: Any,
    ) -> None:
        self.what = what
        self._traceback = traceback
        self._every = every
        self._clock = clock
        self._log = logger if logger is not None else structlog.get_logger()
        self._context = context
        self._seen: set[type[BaseException]] = set()
        self.failures = 0
        self._since = 0.0
        self._last_line = 0.0

    def failed(self, exc: BaseException, **fields: Any) -> None:
        """Counts a failure; logs it if it is the first of an outage, or the interval has passed since the last line."""
        now = self._clock()
        self.failures += 1
        if self.failures == 1:
            self._since = self._last_line = now
            first_of_type = type(exc) not in self._seen
            self._seen.add(type(exc))
            self._log.warning(
                self.what,
                error=describe(exc),
                exc_info=exc if self._traceback and first_of_type and not is_outage(exc) else None,
                **self._context,
                **fields,
            )
            return
        every = self._every if self._every is not None else repeat_seconds
        if now - self._last_line >= every:
            self._last_line = now
            self._log.warning(
                f"{self.what}: still failing",
                error=describe(exc),
                failures=self.failures,
                since_seconds=round(now - self._since, 1),
                **self._context,
                **fields,
            )

    def recovered(self) -> None:
        """Logs the end of an outage (once), if there was one."""
        if not self.failures:
            return
        self._log.info(
            f"{self.what}: recovered",
            failures=self.failures,
            after_seconds=round(self._clock() - self._since, 1),
            **self._context,
        )
        self.failures = 0
