"""A headless Chromium driven over the W3C WebDriver protocol with httpx (no client library), for
the status page's tests (tests/serve/test_statuspage.py, tests/serve/test_serve_plugins.py)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.serving import free_port

__all__ = [
    "CHROMIUM_ARGS",
    "INSTALL",
    "PAGE_WIDTHS",
    "Browser",
    "WebDriverError",
    "artifacts_dir",
    "browser_paths",
    "find_browser",
    "wait_for",
]

INSTALL = "apt-get install -y chromium chromium-driver"
#: The widths the status page is checked at: a desktop, and a phone in an incident.
PAGE_WIDTHS = (1280, 390)


#: As the machine's notes advise for a closed network: no background traffic, no sandbox (root).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1300,1100",
]


def artifacts_dir() -> Path:
    """Where the browser tests leave what a person reviews (screenshots): ``$NAVSTREAM_ARTIFACTS``,
    else ``artifacts/`` at the repository's root (git-ignored); made if missing."""
    root = Path(__file__).resolve().parents[2]
    where = Path(os.environ.get("NAVSTREAM_ARTIFACTS") or root / "artifacts")
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture
def browser_paths() -> tuple[str, str]:
    """Chromium and chromedriver, checked before anything is started."""
    return find_browser()


def find_browser() -> tuple[str, str]:
    """Chromium and chromedriver; the test is skipped without them (failed in CI)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    missing = ", ".join(name for name, path in (("chromium", chromium), ("chromedriver", driver)) if not path)
    message = f"headless browser test needs {missing} (Debian: `{INSTALL}`)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must install them")
    pytest.skip(message)


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, KeyError, IndexError, TypeError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


class WebDriverError(RuntimeError):
    pass


class Browser:
    """One chromedriver and one session, over the W3C WebDriver protocol."""

    def __init__(self, chromium: str, chromedriver: str, workdir: Path) -> None:
        port = free_port()
        self.log = (workdir / "chromedriver.log").open("w")
        self.proc = subprocess.Popen([chromedriver, f"--port={port}"], stdout=self.log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=60)
        self.session = ""
        try:
            wait_for(lambda: self.http.get("/status").json()["value"]["ready"], 20, "chromedriver")
            caps = {
                "capabilities": {
                    "alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": {
                            "binary": chromium,
                            "args": [*CHROMIUM_ARGS, f"--user-data-dir={workdir / 'profile'}"],
                        },
                        "goog:loggingPrefs": {"browser": "ALL"},
                    }
                }
            }
            reply = self.http.post("/session", json=caps).json()["value"]
            if "sessionId" not in reply:
                raise WebDriverError(f"no session: {reply}")
            self.session = reply["sessionId"]
        except BaseException:
            self.quit()
            raise

    def command(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, f"/session/{self.session}{path}", json=body)
        value = response.json()["value"]
        if response.status_code != 200:
            raise WebDriverError(f"{method} {path}: {value.get('error')}: {value.get('message')}")
        return value

    def open(self, url: str) -> None:
        self.command("POST", "/url", {"url": url})

    def js(self, script: str, *args: Any) -> Any:
        return self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.command("GET", "/screenshot")))

    def cdp(self, cmd: str, **params: Any) -> Any:
        """A Chrome DevTools Protocol command, through chromedriver."""
        return self.command("POST", "/goog/cdp/execute", {"cmd": cmd, "params": params})

    def viewport(self, width: int, height: int = 900) -> None:
        """The page's viewport set to exactly ``width`` CSS pixels (a phone's is ``mobile``: its
        ``<meta name=viewport>`` applies); the page gets a resize event."""
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=width < 600,
        )

    def page_screenshot(self, path: Path, width: int) -> None:
        """The whole page at ``width``, as long as it is (not only the viewport)."""
        height = int(self.js("return Math.ceil(document.documentElement.scrollHeight)"))
        self.viewport(width, max(300, min(height, 8000)))
        shot = self.cdp("Page.captureScreenshot", format="png", captureBeyondViewport=False)
        path.write_bytes(base64.b64decode(shot["data"]))

    def console(self) -> list[dict[str, Any]]:
        """The page's console messages so far (chromedriver's log extension)."""
        try:
            return list(self.command("POST", "/se/log", {"type": "browser"}))
        except WebDriverError:
            return []

    def quit(self) -> None:
        try:
            if self.session:
                self.http.delete(f"/session/{self.session}")
        except httpx.HTTPError:
            pass
        finally:
            self.http.close()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.log.close()
