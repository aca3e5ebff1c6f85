"""A headless Chromium driven through the DevTools protocol, for tests of web pages (the study's
rating page). Chromium is the Debian package ``chromium-headless-shell`` (.ci/run installs it); tests
that need it are skipped with that reason where it is missing."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def chromium() -> str | None:
    return (
        shutil.which("chromium-headless-shell")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )


MISSING = "needs a headless Chromium (apt-get install chromium-headless-shell; .ci/run installs it)"


#: DevTools' answers to a question asked while the page navigates (no page to ask yet)
NAVIGATING = ("Inspected target navigated or closed", "Cannot find context with specified id")


class Tab:
    """The few DevTools-protocol calls tests need, over one page's websocket."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=30)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.js(expression)
            except RuntimeError as err:  # asked while the page was navigating (a form sent): ask again
                if not any(m in str(err) for m in NAVIGATING):
                    raise
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}")

    def screenshot(self, path: Path) -> Path:
        """The viewport as ``path``: PNG, or JPEG (quality 85) for a ``.jpg`` name."""
        options = {"format": "jpeg", "quality": 85} if path.suffix == ".jpg" else {"format": "png"}
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **options)["data"]))
        return path


@contextmanager
def browser_tab(width: int = 1280, height: int = 1400) -> Iterator[Tab]:
    """A fresh headless Chromium (its own profile) and its first tab; everything stopped at the end."""
    profile = Path(tempfile.mkdtemp(prefix="coz-chromium-"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0"]
    process = subprocess.Popen(
        [chromium(), *flags, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its renderer processes too are stopped at the end, as one group
    )
    tab = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        tab = Tab(page["webSocketDebuggerUrl"])
        yield tab
    finally:
        if tab is not None:  # the websocket's reader is a non-daemon thread: left open, pytest hangs
            tab.ws.close()
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)
