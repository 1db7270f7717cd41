"""Structured logging for every process: JSON lines with the request, user and campaign ids bound where known."""

from __future__ import annotations

import logging
import sys

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
