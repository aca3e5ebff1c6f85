"""``coz.study serve``: the rating page, on the standard library's threaded HTTP server.

    GET  /               welcome and instructions (a rater with the cookie goes on where they were)
    POST /start          a new rater (access code checked): their own link /r/<token>, also a cookie
    GET  /r/<token>      the rater's next unanswered question, or the thank-you page
    POST /r/<token>      the scores of one question, committed before the answer; then the next
    GET  /media/<file>   the study's pictures (hash names only)

Each request runs on its own thread; the database serialises the writes. The rater's progress lives
only in the database, so a reload, another device with the same link, or a restarted server all
continue at the first unanswered question.
"""

from __future__ import annotations

import hmac
import logging
import re
import sys
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from coz.study import pages
from coz.study.manifest import plan_of
from coz.study.votes import VoteStore

log = logging.getLogger("coz.study")

COOKIE = "coz_study_rater"
_MEDIA = re.compile(r"^/media/([0-9a-f]{16}\.(png|gif))$")
_RATER = re.compile(r"^/r/([A-Za-z0-9_-]{8,64})$")
_TYPES = {"png": "image/png", "gif": "image/gif"}
MAX_FORM_BYTES = 16_384
REQUEST_TIMEOUT_S = 60.0


class BadForm(Exception):
    """A POST refused before its body is read: the HTTP status and the rater's one line."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class StudyApp:
    """What the page does, without HTTP: who is next, what to show, recording answers."""

    def __init__(self, manifest: dict, store: VoteStore, instructions: dict, access_code: str | None) -> None:
        self.manifest = manifest
        self.store = store
        self.instructions = dict(instructions)
        self.access_code = None if access_code in (None, "") else str(access_code)
        self.media_dir = Path(manifest["folder"]) / "media"

    def start(self, code: str) -> str | None:
        """A new rater's token, or None when the access code is wrong."""
        if self.access_code is not None and not hmac.compare_digest(code.encode(), self.access_code.encode()):
            return None
        _, token = self.store.new_rater()
        return token

    def next_question(self, rater_id: int) -> tuple[int, dict] | None:
        """(1-based number, plan entry) of the first unanswered question, None when all are done."""
        answered = self.store.answered(rater_id)
        for number, entry in enumerate(plan_of(self.manifest, rater_id), start=1):
            if entry["question"] not in answered:
                return number, entry
        return None

    def page_for(self, rater_id: int, token: str) -> str:
        plan = plan_of(self.manifest, rater_id)
        found = self.next_question(rater_id)
        if found is None:
            return pages.thanks(self.instructions["thanks"], len(plan))
        number, entry = found
        spec = self.manifest["questions"][entry["question"]]
        return pages.question(
            number,
            len(plan),
            self.instructions[spec["kind"]],
            spec,
            entry["order"],
            entry["question"],
            f"/r/{token}",
        )

    def answer(self, rater_id: int, form: dict[str, str]) -> str | None:
        """Record the form's scores; a one-line problem for the rater, or None when recorded (or
        already recorded: the first answer stands)."""
        question = form.get("question", "")
        entry = next((e for e in plan_of(self.manifest, rater_id) if e["question"] == question), None)
        if entry is None:
            return "This question is not one of yours."
        scores = {}
        for position, method in enumerate(entry["order"]):
            value = form.get(f"s{position}", "")
            if value not in {"1", "2", "3", "4", "5"}:
                return f"Please rate every sample (sample {chr(ord('A') + position)} has no rating)."
            scores[method] = int(value)
        spec = self.manifest["questions"][question]
        self.store.vote(rater_id, question, spec["kind"], spec["image"], scores)
        return None


def make_handler(app: StudyApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "coz-study"
        protocol_version = "HTTP/1.1"
        timeout = REQUEST_TIMEOUT_S  # a client that stops sending mid-request frees its thread

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
            log.debug("%s " + format, self.client_address[0], *args)

        # ------------------------------------------------------------ replies
        def _send(self, status: int, body: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _html(self, status: int, html: str, headers: dict[str, str] | None = None) -> None:
            self._send(
                status,
                html.encode(),
                "text/html; charset=utf-8",
                {"Cache-Control": "no-store", **(headers or {})},
            )

        def _redirect(self, where: str, headers: dict[str, str] | None = None) -> None:
            self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": where, **(headers or {})})

        def _rater(self) -> tuple[int, str] | None:
            match = _RATER.match(self.path.split("?")[0])
            if not match:
                return None
            rater_id = app.store.rater(match[1])
            return (rater_id, match[1]) if rater_id is not None else None

        def _form(self) -> dict[str, str]:
            """The posted form; :class:`BadForm` for a length that is not a number (``-1`` would read
            until the client closes) or is over :data:`MAX_FORM_BYTES`: nothing of it is read."""
            length = (self.headers.get("Content-Length") or "0").strip()
            if not length.isdigit():
                raise BadForm(HTTPStatus.BAD_REQUEST, "The request has no valid Content-Length.")
            if int(length) > MAX_FORM_BYTES:
                raise BadForm(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "The form is too large.")
            data = parse_qs(self.rfile.read(int(length)).decode("utf-8", "replace"))
            return {key: values[0] for key, values in data.items()}

        # ------------------------------------------------------------ routes
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?")[0]
            if path == "/":
                token = SimpleCookie(self.headers.get("Cookie", "")).get(COOKIE)
                if token is not None and app.store.rater(token.value) is not None:
                    return self._redirect(f"/r/{token.value}")
                return self._html(
                    HTTPStatus.OK, pages.welcome(app.instructions["welcome"], app.access_code is not None)
                )
            if media := _MEDIA.match(path):
                file = app.media_dir / media[1]
                if file.is_file():
                    return self._send(
                        HTTPStatus.OK, file.read_bytes(), _TYPES[media[2]], {"Cache-Control": "max-age=86400"}
                    )
            if path.startswith("/r/"):
                rater = self._rater()
                if rater is not None:
                    return self._html(HTTPStatus.OK, app.page_for(*rater))
                return self._html(
                    HTTPStatus.NOT_FOUND,
                    pages.problem("This link is not known; start from the study's address."),
                )
            return self._html(HTTPStatus.NOT_FOUND, pages.problem("Not found."))

        do_HEAD = do_GET

        def do_POST(self) -> None:  # noqa: N802
            path = self.path.split("?")[0]
            try:
                form = self._form()
            except BadForm as refused:
                self.close_connection = True  # its body was not read: it must not pass for the next request
                return self._html(refused.status, pages.problem(refused.message))
            if path == "/start":
                token = app.start(form.get("code", ""))
                if token is None:
                    page = pages.welcome(app.instructions["welcome"], True, "That access code is not right.")
                    return self._html(HTTPStatus.FORBIDDEN, page)
                cookie = f"{COOKIE}={token}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax"
                return self._redirect(f"/r/{token}", {"Set-Cookie": cookie})
            rater = self._rater()
            if rater is None:
                return self._html(HTTPStatus.NOT_FOUND, pages.problem("This link is not known."))
            problem = app.answer(rater[0], form)
            if problem is not None:
                return self._html(HTTPStatus.BAD_REQUEST, pages.problem(problem, f"/r/{rater[1]}"))
            return self._redirect(f"/r/{rater[1]}")

    return Handler


class StudyServer(ThreadingHTTPServer):
    daemon_threads = True  # a rater's open connection never keeps the server from stopping
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        """A client that went away (closed the tab, timed out) is one debug line, not a traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            log.debug("%s: %s", client_address[0], error)
            return
        super().handle_error(request, client_address)


def make_server(app: StudyApp, host: str, port: int) -> StudyServer:
    return StudyServer((host, port), make_handler(app))
