"""The web demo (``python -m coz.app``): driven in-process by gradio_client, and in a real headless
Chromium through the DevTools protocol; bad uploads get a message and the server keeps serving."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from coz.run.cli import tool_config_dir

pytest.importorskip("gradio", reason="the web demo needs gradio (make install)")

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = REPO / "experiments" / "app" / "screenshot.png"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _app_config(samples: list[Path], **values):
    overrides = [
        f"port={_free_port()}",
        f"samples={samples[0].parent}",
        "zoom_overrides=['zoom.size=128']",  # small states: a job takes a second
        *(f"{k}={v}" for k, v in values.items()),
    ]
    with initialize_config_dir(config_dir=tool_config_dir("app"), version_base="1.3"):
        return compose(config_name="app", overrides=overrides)


@pytest.fixture(scope="module")
def server(samples):
    from coz.app import launch

    # bicubic first, so the page's default job needs no model: the browser test takes seconds
    config = _app_config(samples, max_upload_mb=1, backbones="[bicubic,nearest,realesrgan]")
    demo, url, work_dir = launch(config, block=False)
    yield url, work_dir
    demo.close()
    shutil.rmtree(work_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server[0], verbose=False)


def _zoom(client, upload: Path, steps: int = 2, user_prompt: str = ""):
    return client.predict(str(upload), None, "bicubic", "null", steps, user_prompt, api_name="/zoom")


def test_defaults_listen_locally():
    with initialize_config_dir(config_dir=tool_config_dir("app"), version_base="1.3"):
        cfg = compose(config_name="app")
    assert cfg.host == "127.0.0.1" and "realesrgan" in cfg.backbones and cfg.prompts == ["null"]


def test_client_zooms_an_upload(client, server, samples):
    gallery, strip, gif, archive, status = _zoom(client, samples[0], user_prompt="a red box")
    assert "Done: 3 scale-states, x1 to x16" in status
    captions = [caption for _, caption in json.loads((Path(gallery) / "captions.json").read_text()).items()]
    assert captions == ["x1 (input)", "x4: a red box", "x16: a red box"]
    assert Image.open(strip).width > 3 * 128
    assert Image.open(gif).is_animated
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
    stem = samples[0].stem
    assert {f"images/{stem}/zoom.json", f"images/{stem}/strip.png", "scales/x16/astronaut.png"} <= names
    # nothing the user uploaded is kept: no file on the server holds its bytes
    uploaded = samples[0].read_bytes()
    assert not [p for p in server[1].rglob("*") if p.is_file() and p.read_bytes() == uploaded]


def test_bad_uploads_get_a_message_and_the_next_good_one_works(client, samples, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(samples[0].read_bytes()[:5000])
    bomb = tmp_path / "bomb.png"
    Image.new("1", (8000, 8000)).save(bomb)  # 64 megapixels in a few kB
    big = tmp_path / "big.png"
    big.write_bytes(samples[0].read_bytes() + bytes(2**20))  # over this server's 1 MB limit
    expected = {
        text: "notes.png: not an image file",
        corrupt: "corrupt.png: truncated file",
        bomb: "bomb.png: 8000x8000 is 64.0 megapixels, which exceeds the limit",
        big: "big.png: 1.",
    }
    for upload, message in expected.items():
        gallery, strip, *_, status = _zoom(client, upload)
        assert "Error:" in status and message in status, status
        assert strip is None
    *_, status = _zoom(client, samples[1], steps=1)
    assert "Done: 2 scale-states" in status


def test_service_offers_samples_and_refuses_unknown_choices(samples, tmp_path):
    from coz.app import ZoomService
    from coz.errors import CozError

    service = ZoomService(_app_config(samples), tmp_path)
    assert set(service.samples) >= {"astronaut", "chelsea"}
    assert service.backbones[:3] == ["realesrgan", "bicubic", "nearest"]
    out = service.run(None, "chelsea", "nearest", "null", 1, "")
    assert [caption for _, caption in out["gallery"]] == ["x1 (input)", "x4"]  # no model, no prompt
    for args, message in [
        ((None, "chelsea", "sd9", "null", 1, ""), "backbone 'sd9' is not offered"),
        ((None, "chelsea", "nearest", "vlm9", 1, ""), "prompt mode 'vlm9'"),
        ((None, "chelsea", "nearest", "null", 9, ""), "steps=9: choose 1 to 4"),
        ((None, None, "nearest", "null", 1, ""), "upload a photo or pick a sample"),
    ]:
        with pytest.raises(CozError, match=message):
            service.run(*args)


def _chromium() -> str | None:
    return (
        shutil.which("chromium-headless-shell")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )


class DevTools:
    """The few DevTools-protocol calls the test needs, over one page's websocket."""

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

    def wait_for(self, expression: str, timeout: float = 90.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {expression}")


@pytest.mark.skipif(
    _chromium() is None,
    reason="needs a headless Chromium (apt-get install chromium-headless-shell; .ci/run installs it)",
)
def test_page_in_headless_chromium(server, samples, tmp_path):
    """Upload, zoom, look: the screenshot goes to tmp_path; COZ_UPDATE_SCREENSHOT=1 also refreshes the
    README's picture (experiments/app/screenshot.png), so a plain test run changes no tracked file."""
    profile = Path(tempfile.mkdtemp(prefix="coz-chromium-"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0"]
    browser = subprocess.Popen(
        [_chromium(), *flags, f"--user-data-dir={profile}", "--window-size=1280,1500", "about:blank"],
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
        tab = DevTools(page["webSocketDebuggerUrl"])
        tab.call("Page.navigate", url=server[0])
        tab.wait_for("!!document.querySelector('#upload input[type=file]')")
        root = tab.call("DOM.getDocument")["root"]["nodeId"]
        node = tab.call("DOM.querySelector", nodeId=root, selector="#upload input[type=file]")["nodeId"]
        photo = next(p for p in samples if p.stem == "chelsea")  # a cat: its center is a face
        tab.call("DOM.setFileInputFiles", files=[str(photo)], nodeId=node)
        tab.wait_for("document.querySelector('#upload').innerText.includes('chelsea')")
        tab.js("document.querySelector('#zoom').click()")
        tab.wait_for("document.querySelector('#status').innerText.includes('Done')", timeout=180)
        assert tab.wait_for("document.querySelectorAll('#gallery img').length") >= 3
        tab.wait_for("!!document.querySelector('#strip img')")
        time.sleep(0.5)  # let the images paint
        shot = tab.call("Page.captureScreenshot", format="png")["data"]
        picture = tmp_path / "screenshot.png"
        picture.write_bytes(base64.b64decode(shot))
        assert Image.open(picture).size[0] >= 1000
        if os.environ.get("COZ_UPDATE_SCREENSHOT") == "1":
            tmp = SCREENSHOT.with_suffix(".tmp.png")
            tmp.write_bytes(picture.read_bytes())
            tmp.replace(SCREENSHOT)  # atomically: a failed run leaves the last good screenshot
    finally:
        # the websocket's reader is a non-daemon thread: left open, it keeps pytest from exiting
        if tab is not None:
            tab.ws.close()
        os.killpg(browser.pid, signal.SIGTERM)
        try:
            browser.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(browser.pid, signal.SIGKILL)
            browser.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)
