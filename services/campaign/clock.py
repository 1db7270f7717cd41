"""The campaign service's "now": the system clock, or in tests a clock that a file moves ahead.

Everything in the campaign service that compares with the present (the picker's due instants, the
schedule checks of UpdateCampaign, an approval's next occurrence, when an auto-resend is due) asks
one `Clock`, so a test can let days pass without waiting for them: with `HERALD_TEST_CLOCK=1` the
clock runs ahead of the system's by the seconds written in `<HERALD_DATA_DIR>/test-clock-offset`
(read on every call, so a test changes it while Herald runs). Both are needed, and the service logs a
warning at start when the setting is on, so a production install cannot move its clock by a stray
file or a stray variable. Only the campaign service reads it: delivery, audience and the translator
keep the system's time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import structlog

from services.common.config import Settings

log = structlog.get_logger()

OFFSET_FILE = "test-clock-offset"


class Clock(Protocol):
    def now(self) -> datetime:
        """The present instant, timezone-aware (UTC)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class OffsetFileClock:
    """The system clock plus the seconds the file holds (none while it does not exist)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def offset(self) -> timedelta:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return timedelta()
        try:
            return timedelta(seconds=float(text or "0"))
        except ValueError:
            raise ValueError(f"{self.path} must hold a number of seconds, not {text[:40]!r}") from None

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset()


def clock_of(settings: Settings) -> Clock:
    """The system clock, unless HERALD_TEST_CLOCK is on."""
    if not settings.test_clock:
        return SystemClock()
    path = settings.data_dir / OFFSET_FILE
    log.warning("HERALD_TEST_CLOCK is on: the campaign service's clock is moved by a file", path=str(path))
    return OffsetFileClock(path)
