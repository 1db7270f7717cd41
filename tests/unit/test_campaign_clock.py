"""The campaign service's clock: the system's unless HERALD_TEST_CLOCK is on, then moved by the offset file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.campaign.clock import OFFSET_FILE, OffsetFileClock, SystemClock, clock_of
from services.common.config import Settings


def _close(a: datetime, b: datetime) -> bool:
    return abs(a - b) < timedelta(seconds=5)


def test_without_the_setting_the_offset_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / OFFSET_FILE).write_text(str(3 * 86400))
    clock = clock_of(Settings(data_dir=tmp_path))
    assert isinstance(clock, SystemClock)
    assert _close(clock.now(), datetime.now(UTC))


def test_with_the_setting_the_clock_runs_ahead_by_the_files_seconds_read_on_every_call(tmp_path: Path) -> None:
    clock = clock_of(Settings(data_dir=tmp_path, test_clock=True))
    assert isinstance(clock, OffsetFileClock)
    assert _close(clock.now(), datetime.now(UTC))  # no file yet: no offset
    (tmp_path / OFFSET_FILE).write_text("259200.5\n")
    assert _close(clock.now(), datetime.now(UTC) + timedelta(days=3, seconds=0.5))
    (tmp_path / OFFSET_FILE).write_text("0")
    assert _close(clock.now(), datetime.now(UTC))
    assert clock.now().tzinfo is not None


def test_an_offset_file_that_holds_no_number_is_an_error_not_a_silent_zero(tmp_path: Path) -> None:
    (tmp_path / OFFSET_FILE).write_text("three days")
    with pytest.raises(ValueError, match="number of seconds"):
        OffsetFileClock(tmp_path / OFFSET_FILE).now()
