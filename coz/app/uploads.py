"""What reaches the server from a client: request sizes, and each upload's own private copy.

:class:`UploadGuard` sits in front of every route of the page's web app:

- no request body may be larger than the upload limit (plus a little for the form around it), on
  any route: a bigger one is cut off with 413 before anything is decoded;
- a job's inputs may not name a file by URL (Gradio would download it before our checks): 400;
- Gradio files an upload under the hash of its bytes, so two users uploading the same photo get the
  same path, and the first job to finish would delete the other's input. The guard moves every
  upload at once to a folder of its own (``uploads/<random>/<name>``) and hands the client that
  path, so each job owns its input and deletes it when it ends;
- an upload that would take the uploads waiting for a job over ``max_pending_upload_mb`` is refused
  with 429, and a job's request renews the age of the uploads it names (:mod:`coz.app.pending`).

:func:`upload_path` checks the path a job is handed: a regular file (no link, no device) under the
uploads folder, within the size limit.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
import uuid
from pathlib import Path

from coz.app.pending import PendingUploads, named_paths
from coz.errors import CozError

#: room for the multipart form (boundaries, headers) or the JSON around a file
_FORM_SLACK = 1 << 16


class UploadGuard:
    """ASGI middleware: the size limit on every request, private copies of uploads (module help)."""

    def __init__(self, app, *, folder: str, max_bytes: int, pending: PendingUploads) -> None:
        self.app = app
        self.pending = pending
        self.uploads = Path(folder) / "uploads"
        self.max_body = int(max_bytes) + _FORM_SLACK
        self._lock = threading.Lock()
        self._last_copy: dict[str, Path] = {}  # Gradio's path -> the private copy last made of it

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _too_large(send, self.max_body)
        over = False
        received = 0

        async def limited_receive():
            nonlocal over, received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:  # a body without a length, or one that lied
                    over = True
                    return {"type": "http.disconnect"}
            return message

        started = False

        async def guarded_send(message):
            nonlocal started
            if over:  # the app saw a disconnect: what it answers is replaced below
                return
            started = True
            await send(message)

        is_upload = scope["method"] == "POST" and scope["path"].rstrip("/").endswith("/upload")
        reserved = int(length) if length is not None else self.max_body  # no length: the most it may be
        if is_upload and not self.pending.reserve(reserved):
            mb = self.pending.max_bytes / 2**20
            return await _refuse(
                send,
                429,
                f"too many uploads are waiting for a job (max_pending_upload_mb={mb:g}): "
                f"press Zoom on yours, or try again within {self.pending.ttl_s:g} s",
            )
        if scope["method"] == "POST" and not is_upload:  # a job's inputs: JSON, small
            body = await _read_body(limited_receive)
            if over:
                return await _too_large(send, self.max_body)
            try:
                data = _json(body)
            except _TooDeep:
                return await _refuse(send, 400, "the request's JSON is nested too deep")
            if _names_a_url(data):
                return await _refuse(send, 400, "files come from uploads only, not from URLs")
            if not all(_is_under(path, self.uploads) for path in named_paths(data)):
                # refused here in one line; Gradio's own refusal logs a traceback per request
                return await _refuse(send, 400, "files come from uploads only")
            self.pending.claim(named_paths(data))  # before Gradio queues the job (coz.app.pending)
            limited_receive = _replay(body)
        try:
            await self.app(
                scope, limited_receive, self._private_copies(guarded_send) if is_upload else guarded_send
            )
        except Exception:
            if not over:
                raise
        finally:
            if is_upload:  # on disk now, where the pending uploads are counted, or failed
                self.pending.release(reserved)
        if over and not started:
            await _too_large(send, self.max_body)

    def _private_copies(self, send):
        """A ``send`` that holds back the upload route's answer (a JSON list of Gradio's paths) and
        answers with a private copy of each instead."""
        start: dict | None = None
        body = b""

        async def send_private(message):
            nonlocal start, body
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                return await send(message)
            body += message.get("body", b"")
            if message.get("more_body"):
                return
            if start["status"] == 200:
                try:
                    paths = json.loads(body)
                    body = json.dumps([str(self._move_to_private(Path(p))) for p in paths]).encode()
                except (OSError, ValueError, TypeError):
                    start = {**start, "status": 500}
                    body = b'"the upload could not be stored; please try again"'
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        return send_private

    def _move_to_private(self, shared: Path) -> Path:
        private = self.uploads / uuid.uuid4().hex / shared.name
        private.parent.mkdir(parents=True)
        with self._lock:
            try:
                os.replace(shared, private)
            except FileNotFoundError:
                # Another upload of the same bytes landed on the same path and its copy took the
                # file: the bytes are identical, so copy that one.
                if str(shared) not in self._last_copy:
                    raise
                shutil.copyfile(self._last_copy[str(shared)], private)
            self._last_copy[str(shared)] = private
        # Gradio's hash folder stays (empty): another upload may be about to land in it.
        return private


async def _too_large(send, limit: int) -> None:
    await _refuse(send, 413, f"request body over the upload limit ({limit} bytes)")


async def _refuse(send, status: int, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return body
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def _replay(body: bytes):
    """A ``receive`` that hands the app the body already read."""
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


class _TooDeep(Exception):
    """JSON nested deeper than Python's parser goes (``"[" * 100000``)."""


def _json(body: bytes):
    """The request's JSON (None if it is not JSON: Gradio answers that itself)."""
    try:
        return json.loads(body)
    except ValueError:
        return None
    except RecursionError:
        raise _TooDeep from None


def _is_under(path: str, folder: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(folder.resolve())


def _names_a_url(data) -> bool:
    """Whether a request's JSON data hands Gradio a file by URL (``{"path": "https://..."}``),
    which Gradio would download before any of our checks."""
    return any(p.lower().lstrip().startswith(("http:", "https:")) for p in named_paths(data))


def upload_path(path: str | Path, folder: Path, max_mb: float) -> Path:
    """``path`` if it is an upload this server stored (a regular file under ``folder``, no link on
    the way) within ``max_mb``; else a one-line :class:`CozError` that says nothing about the path."""
    path = Path(os.path.abspath(path))
    refused = CozError("that file was not uploaded here: upload a photo or pick a sample")
    if not path.is_relative_to(folder.resolve()):
        raise refused
    try:
        info = os.lstat(path)
    except OSError:
        raise refused from None
    if not stat.S_ISREG(info.st_mode) or path.resolve() != path:
        raise refused
    size_mb = info.st_size / 2**20
    if size_mb > max_mb:
        raise CozError(f"{path.name}: {size_mb:.1f} MB is over the upload limit of {max_mb} MB")
    return path


def delete_upload(path: Path) -> None:
    """The job's private upload and its folder."""
    path.unlink(missing_ok=True)
    _remove_empty(path.parent)


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty or gone
        pass
