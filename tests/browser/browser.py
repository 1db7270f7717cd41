"""A headless Debian Chromium, driven with Selenium through Debian's chromedriver, as the browser tests use it.

`make install` installs both (apt-get packages `chromium` and `chromium-driver`). The browser is told
to fetch nothing on its own (no sync, updates, field trials or QUIC), so every request it makes is one
a page asked for: the tests read them back from its performance log, and its console from the browser log.

Selenium's calls block, so the async tests make them in a thread: the SMTP recorder of the Herald under
test runs on the test's event loop and keeps answering meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# Seconds a page may take to load, and a click to lead to the next page.
PAGE_SECONDS = 15
# Schemes of requests that leave the page's own bytes (data: and about:blank do not).
_NETWORK_SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp"})
# An email shown as a page is a long data: URL; messages that name it are shortened to be read.
_DATA_URL = re.compile(r"data:[^\s,]*,\S+")
_IMAGE = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
T = TypeVar("T")


def start_chromium(user_data_dir: Path) -> WebDriver:
    """Chromium with a fresh profile in `user_data_dir`, logging its console and its network requests."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} missing: `make install` installs chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.add_argument("--window-size=1200,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(PAGE_SECONDS)
    return driver


@dataclass(frozen=True)
class Shown:
    """What a person sees of a page: its address, its title (the tab's label) and its visible text."""

    url: str
    title: str
    text: str


@dataclass(frozen=True)
class Trouble:
    """What went wrong in the browser since the last look: requests to other hosts, console errors."""

    outside_requests: list[str]
    console_errors: list[str]

    def __bool__(self) -> bool:
        return bool(self.outside_requests or self.console_errors)


def data_url(html: str) -> str:
    """A page of this HTML that needs no server."""
    return "data:text/html;charset=utf-8;base64," + base64.b64encode(html.encode()).decode()


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


class Browser:
    """One Chromium tab, used the way a reader uses it: open an address, read, click, press a button.

    `origin` is the Herald whose pages the tab shows: `trouble()` names every request to anywhere else.
    """

    def __init__(self, driver: WebDriver, origin: str) -> None:
        self.driver = driver
        self.origin = origin

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.to_thread(call)

    # --- what the reader does ---

    async def open(self, url: str) -> Shown:
        """Types `url` into the address bar."""

        def go() -> Shown:
            self.driver.get(url)
            return self._shown()

        return await self._run(go)

    async def open_email(self, html_part: str) -> Shown:
        """Shows an email's HTML part as a page of its own, without its images, as many mail clients show
        mail by default (a data: page may not load from a loopback address anyway, which Herald is here)."""
        return await self.open(data_url(_IMAGE.sub("", html_part)))

    async def click_link(self, text: str) -> Shown:
        """Clicks the link whose visible text is `text`, and waits for the page it leads to."""
        return await self._run(lambda: self._click(self.driver.find_element(By.LINK_TEXT, text)))

    async def press(self, label: str) -> Shown:
        """Presses the button labelled `label`, and waits for the page the form's answer is."""
        return await self._run(lambda: self._click(self._button(label)))

    # --- what the reader sees ---

    async def frame_text(self, css: str) -> str:
        """The visible text of the document in the frame `css` (an email in a web view)."""

        def read() -> str:
            self.driver.switch_to.frame(self.driver.find_element(By.CSS_SELECTOR, css))
            try:
                return self.driver.find_element(By.TAG_NAME, "body").text
            finally:
                self.driver.switch_to.default_content()

        return await self._run(read)

    async def attributes(self, css: str, *names: str) -> list[dict[str, str | None]]:
        """The given attributes of every element `css` selects, as the DOM has them (URLs made absolute)."""

        def read() -> list[dict[str, str | None]]:
            return [
                {name: element.get_attribute(name) for name in names}
                for element in self.driver.find_elements(By.CSS_SELECTOR, css)
            ]

        return await self._run(read)

    async def trouble(self) -> Trouble:
        """The requests to another host than `origin` and the console errors since the last call."""
        return await self._run(self._trouble)

    async def forget(self) -> None:
        """A blank tab without cookies, the logs read and dropped: the next test starts clean."""

        def reset() -> None:
            self.driver.get("about:blank")
            self.driver.delete_all_cookies()
            self._trouble()

        await self._run(reset)

    # --- in the thread ---

    def _shown(self) -> Shown:
        body = self.driver.find_element(By.TAG_NAME, "body")
        return Shown(self.driver.current_url, self.driver.title, body.text)

    def _button(self, label: str) -> WebElement:
        buttons = self.driver.find_elements(By.TAG_NAME, "button")
        labelled = [button for button in buttons if button.text == label]
        assert len(labelled) == 1, f"{len(labelled)} buttons labelled {label!r} on {self.driver.current_url}"
        return labelled[0]

    def _click(self, element: WebElement) -> Shown:
        page = self.driver.find_element(By.TAG_NAME, "html")
        element.click()
        WebDriverWait(self.driver, PAGE_SECONDS).until(staleness_of(page))
        WebDriverWait(self.driver, PAGE_SECONDS).until(
            lambda driver: driver.execute_script("return document.readyState") == "complete"
        )
        return self._shown()

    def _trouble(self) -> Trouble:
        outside = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] != "Network.requestWillBeSent":
                continue
            url = message["params"]["request"]["url"]
            scheme = urlsplit(url).scheme
            if scheme in _NETWORK_SCHEMES and _origin(url) != _origin(self.origin):
                outside.append(url)
            elif scheme not in _NETWORK_SCHEMES and scheme not in ("data", "about"):
                outside.append(url)
        errors = [
            _DATA_URL.sub("data:…", entry["message"])
            for entry in self.driver.get_log("browser")
            if entry["level"] == "SEVERE"
        ]
        return Trouble(outside, errors)
