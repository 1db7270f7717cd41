"""One Chromium for the browser tests of a session (started in under a second), a clean tab for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from selenium.webdriver.chrome.webdriver import WebDriver

from tests.browser.browser import Browser, start_chromium
from tests.e2e.delivery_helpers import DeliveryHerald


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest_asyncio.fixture(loop_scope="session")
async def browser(chromium: WebDriver, delivery_system: DeliveryHerald) -> AsyncIterator[Browser]:
    """A tab on the pages of the Herald that really sends (`delivery_system`)."""
    tab = Browser(chromium, delivery_system.system.base_url)
    await tab.forget()
    yield tab
    await tab.forget()
