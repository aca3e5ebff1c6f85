"""Uploads waiting for a job: each goes within ``upload_ttl_s`` unless a job holds it, and all of
them together stay under ``max_pending_upload_mb``.

A job deletes its upload when it ends, but some uploads never become a job: a photo uploaded
without pressing Zoom, or a request Gradio itself refuses before our handler runs (a backbone not in
the list, steps over the slider's maximum). A sweep, every few seconds in a thread of its own,
deletes each upload folder (``uploads/<random>/``) older than the limit that no queued or running job
holds. A job's request renews its upload's age as it joins the queue (:meth:`PendingUploads.claim`,
under the same lock as the sweep), so an upload is either gone before its job is queued (the job gets
the page's "not uploaded here" message) or held for as long as the job is queued or runs.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger("coz.app")

#: each pending upload counts as at least this many bytes (its folder and file cost disk blocks
#: too): many tiny uploads reach the limit as surely as a few large ones
MIN_UPLOAD_BYTES = 1 << 16


class PendingUploads:
    """The uploads folder's age limit (:meth:`sweep`, :meth:`start`) and size limit (:meth:`reserve`).

    ``held()`` names the files queued or running jobs hold (``None``: unknown, so nothing is swept).
    """

    def __init__(
        self, folder: Path, *, ttl_s: float, max_bytes: int, held: Callable[[], set[Path] | None]
    ) -> None:
        self.folder = Path(folder)
        self.ttl_s = float(ttl_s)
        self.max_bytes = int(max_bytes)
        self._held = held
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._warned = False
        self._arriving = 0  # bytes reserved by uploads still arriving (reserve, release)

    def start(self) -> None:
        """Sweep in a daemon thread until :meth:`stop` or until the working folder is gone."""
        period = max(0.1, min(self.ttl_s / 4, 30.0))  # an upload goes within ttl + period

        def loop() -> None:
            while not self._stop.wait(period) and self.folder.parent.exists():
                try:
                    self.sweep()
                except Exception:  # one bad sweep must not end the sweeping
                    log.exception("the upload sweep failed")

        threading.Thread(target=loop, name="coz-app-upload-sweep", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def sweep(self) -> list[Path]:
        """Delete the upload folders older than the limit that no job holds; the folders deleted."""
        with self._lock:
            held = self._held()
            if held is None:
                if not self._warned:
                    log.warning("cannot see Gradio's queue: uploads are deleted by their jobs only")
                    self._warned = True
                return []
            held_folders = {Path(os.path.abspath(p)).parent for p in held}
            now = time.time()
            gone = []
            for folder in self._folders():
                try:
                    age = now - folder.stat().st_mtime
                except OSError:
                    continue
                if age > self.ttl_s and folder not in held_folders:
                    shutil.rmtree(folder, ignore_errors=True)
                    gone.append(folder)
        if gone:
            log.info("deleted %d upload(s) no job used within %g s", len(gone), self.ttl_s)
        return gone

    def claim(self, paths: Iterable[str]) -> None:
        """A job's request names these paths: their upload folders start their age again (those that
        are still there), before Gradio queues the job and so holds them."""
        with self._lock:
            for path in paths:
                folder = Path(os.path.abspath(path)).parent
                if folder.parent == self.folder.resolve() and folder.is_dir():
                    os.utime(folder)

    def reserve(self, size: int) -> bool:
        """Room for an upload of ``size`` bytes that is about to arrive: True (and the room is held
        until :meth:`release`) if it keeps the pending uploads, those on disk and those still
        arriving, within the limit (the old ones are swept first)."""
        self.sweep()
        size = max(int(size), MIN_UPLOAD_BYTES)
        with self._lock:  # uploads arriving together each see the others' reservations
            if self._on_disk() + self._arriving + size > self.max_bytes:
                return False
            self._arriving += size
            return True

    def release(self, size: int) -> None:
        """The upload of :meth:`reserve` arrived (it is on disk now) or failed."""
        with self._lock:
            self._arriving -= max(int(size), MIN_UPLOAD_BYTES)

    def _on_disk(self) -> int:
        used = 0
        for folder in self._folders():
            for file in folder.iterdir():
                try:
                    used += max(file.lstat().st_size, MIN_UPLOAD_BYTES)
                except OSError:
                    pass
        return used

    def _folders(self) -> list[Path]:
        try:
            return [p for p in self.folder.resolve().iterdir() if p.is_dir() and not p.is_symlink()]
        except OSError:  # no upload yet
            return []


def queued_files(demo) -> set[Path] | None:
    """The files named by the events Gradio has queued or is running (``None`` if its queue is not
    where Gradio 6 keeps it: then nothing may be swept)."""
    try:
        events = list(demo._queue.event_ids_to_events.values())
        data = [event.data.data for event in events if event.data is not None]
    except AttributeError:
        return None
    return {Path(p) for p in named_paths(data)}


def named_paths(data) -> list[str]:
    """Every ``"path"`` a request's JSON data names (as Gradio's file payloads do), at any depth."""
    found = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("path"), str):
                found.append(item["path"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found
