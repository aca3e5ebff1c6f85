"""The web demo's uploads that no job uses: swept after ``upload_ttl_s`` unless a queued job holds
them, and refused over ``max_pending_upload_mb``. Its own module (and server): Gradio keeps one upload
folder per process, so one page is served at a time."""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from app_server import _app_config, _file_data, _raw_job, post
from PIL import Image

if importlib.util.find_spec("gradio") is None:  # found, not imported: collection would pay seconds
    pytest.skip("the web demo needs gradio (make install)", allow_module_level=True)
httpx = pytest.importorskip("httpx")

TTL_S = 2.0  # the swept server's upload_ttl_s: its sweep runs every TTL_S / 4


@pytest.fixture(scope="module")
def swept(samples):
    """A server whose unused uploads go after 2 s, with 2 MB of pending uploads at most."""
    from coz.app.server import launch

    cfg = _app_config(samples[0].parent, max_upload_mb=1, upload_ttl_s=TTL_S, max_pending_upload_mb=2)
    demo, url, work_dir = launch(cfg, block=False)
    yield url, work_dir
    demo.close()
    shutil.rmtree(work_dir, ignore_errors=True)


def _upload(url: str, content: bytes, name: str = "photo.png") -> httpx.Response:
    files = {"files": (name, content, "image/png")}
    return post(f"{url}gradio_api/upload", files=files, timeout=30)


def _gone_within(path: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_unused_uploads_go_after_the_ttl(swept, samples):
    """An upload no request names, and the uploads of two requests Gradio refuses before the page's
    handler runs (no job ever deletes those): each is kept until the ttl, then swept (one wait)."""
    url = swept[0]
    start = time.monotonic()
    unused = Path(_upload(url, samples[0].read_bytes()).json()[0])
    assert unused.read_bytes() == samples[0].read_bytes()
    refused = []
    for backbone, steps in (("sd9", 1), ("nearest", 99)):
        uploaded = time.monotonic()
        path = _upload(url, samples[0].read_bytes()).json()[0]
        answer = _raw_job(url, [_file_data(path), None, backbone, "null", "coz", steps, ""])
        assert not answer.get("success"), answer  # Gradio's own refusal: the handler never ran
        if time.monotonic() - uploaded < TTL_S:  # (on a loaded machine the sweep may be due already)
            assert Path(path).exists()  # the refusal kept it: only the sweep takes it
        refused.append(Path(path))
    assert _gone_within(unused.parent, TTL_S * 3), "an upload no job used is still there"
    # not before its time: the sweep runs every TTL_S / 4, so it went after TTL_S, before 1.25 TTL_S
    # (plus this loop's 0.1-s polling and a loaded machine's slack)
    assert time.monotonic() - start > TTL_S
    assert all(_gone_within(p.parent, TTL_S * 3) for p in refused), "a refused request's upload stays"
    assert not (swept[1] / "uploads").exists() or not any((swept[1] / "uploads").iterdir())


def test_a_queued_jobs_upload_stays_while_an_unused_one_goes(swept, samples, tmp_path):
    """The job computing holds the compute lock (here: the test holds it), the next waits in
    Gradio's queue with its upload for longer than the ttl; an upload beside it goes meanwhile."""
    from coz.app.jobs import _COMPUTE

    url = swept[0]
    unused = Path(_upload(url, samples[1].read_bytes()).json()[0])
    answers: dict[str, dict] = {}
    _COMPUTE.acquire()
    try:
        first = threading.Thread(  # a sample: its handler runs and waits for the lock
            target=lambda: answers.setdefault(
                "first", _raw_job(url, [None, "chelsea", "nearest", "null", "coz", 1, ""], 120)
            )
        )
        first.start()
        second_messages: list[dict] = []
        # uploaded just before its job joins the queue (which renews its age): on a loaded machine an
        # upload made earlier could pass the ttl first, and go as an unused one should
        queued = _upload(url, samples[0].read_bytes()).json()[0]
        second = threading.Thread(
            target=lambda: answers.setdefault(
                "second",
                _raw_job(
                    url, [_file_data(queued), None, "nearest", "null", "coz", 1, ""], 120, second_messages
                ),
            )
        )
        second.start()
        deadline = time.monotonic() + 60
        while not any(m.get("msg") == "estimation" and m.get("rank") == 0 for m in second_messages):
            assert time.monotonic() < deadline and second.is_alive(), second_messages
            time.sleep(0.1)
        assert _gone_within(unused.parent, TTL_S * 3)  # the sweep ran: the unused upload went
        time.sleep(TTL_S)  # and a little longer: the queued upload is older than the ttl by now
        assert Path(queued).read_bytes() == samples[0].read_bytes()
    finally:
        _COMPUTE.release()
    first.join(120)
    second.join(120)
    assert answers["second"]["success"] and "Done" in answers["second"]["output"]["data"][0], answers
    assert not Path(queued).exists()  # and its job deleted it when it ended


def test_pending_uploads_over_the_cap_are_refused(swept, tmp_path):
    """max_pending_upload_mb=2: three 0.6-MB uploads fit, a fourth is refused with 429 until the
    sweep has taken the others."""
    noise = np.random.default_rng(0).integers(0, 256, (450, 450, 3), dtype=np.uint8)
    png = tmp_path / "noise.png"
    Image.fromarray(noise).save(png)
    content = png.read_bytes()
    assert 0.55 * 2**20 < len(content) < 0.7 * 2**20
    uploads = swept[1] / "uploads"
    deadline = time.monotonic() + TTL_S * 3  # the other tests' uploads go first
    while uploads.exists() and any(uploads.iterdir()):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    kept = [_upload(swept[0], content) for _ in range(3)]
    assert [r.status_code for r in kept] == [200] * 3
    refused = _upload(swept[0], content)
    assert refused.status_code == 429 and "max_pending_upload_mb=2" in refused.text, refused.text
    assert len(list(uploads.iterdir())) == 3  # the refused one left nothing
    assert all(_gone_within(Path(r.json()[0]).parent, TTL_S * 3) for r in kept)
    assert _upload(swept[0], content).status_code == 200


def test_uploads_arriving_together_are_held_to_the_cap_too(tmp_path):
    """Eight 0.6-MB uploads arriving at once under a 2-MB cap: three get room, five are refused (each
    was checked against the disk alone, before any had landed, and all ten got in); room comes back
    as each arrival is released (it is then counted on disk)."""
    from coz.app.pending import PendingUploads

    pending = PendingUploads(tmp_path / "uploads", ttl_s=1000, max_bytes=2 * 2**20, held=set)
    size = int(0.6 * 2**20)
    start = threading.Barrier(8)
    answers: list[bool] = []

    def arrive() -> None:
        start.wait()
        answers.append(pending.reserve(size))

    threads = [threading.Thread(target=arrive) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [False] * 5 + [True] * 3
    landed = tmp_path / "uploads" / "a1" / "photo.png"  # one arrival is now on disk, the others failed
    landed.parent.mkdir(parents=True)
    landed.write_bytes(b"x" * size)
    for _ in range(3):
        pending.release(size)
    assert pending.reserve(size) and pending.reserve(size) and not pending.reserve(size)


def test_a_second_page_in_the_same_process_is_refused(swept, samples, tmp_path):
    """Gradio reads its upload folder from the process environment at every request: a second page
    in this process would make the first refuse its own uploads ("not uploaded by a user"). The second
    launch is refused in one line, and the first page still takes an upload and zooms it."""
    from coz.app.server import launch
    from coz.run.schema import ConfigError

    before = os.environ["GRADIO_TEMP_DIR"]
    with pytest.raises(ConfigError, match="already serves a page"):
        launch(_app_config(samples[0].parent), block=False)
    assert os.environ["GRADIO_TEMP_DIR"] == before == str(swept[1])
    path = _upload(swept[0], samples[0].read_bytes()).json()[0]
    answer = _raw_job(swept[0], [_file_data(path), None, "nearest", "null", "coz", 1, ""], 120)
    assert answer["success"] and "Done" in answer["output"]["data"][0], answer
