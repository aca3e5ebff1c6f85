"""What the web demo's test modules share: a config on a free port, and jobs sent as raw HTTP."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path

from hydra import compose, initialize_config_dir

from coz.run.cli import tool_config_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _app_config(samples_folder: Path, **values):
    overrides = [
        f"port={_free_port()}",
        f"samples={samples_folder}",
        *(f"{k}={v}" for k, v in values.items()),
    ]
    with initialize_config_dir(config_dir=tool_config_dir("app"), version_base="1.3"):
        return compose(config_name="app", overrides=overrides)


# --------------------------------------------------------------------------- raw HTTP
# The servers are local and plain HTTP: no TLS context. httpx otherwise builds one from certifi's
# bundle at every call (about 70 ms of CPU each: seconds over a module's polls and clients), and
# gradio_client does the same unless it is made with ``ssl_verify=False``.


def get(url: str, **kwargs):
    import httpx

    return httpx.get(url, verify=False, **kwargs)


def post(url: str, **kwargs):
    import httpx

    return httpx.post(url, verify=False, **kwargs)


def _fn_index(url: str) -> int:
    config = get(f"{url}config", timeout=30).json()
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == "zoom")


def _raw_job(url: str, data: list, timeout: float = 60, messages: list | None = None) -> dict:
    """Join the queue with ``data`` as sent (no client-side upload) and return the final message
    (every message goes to ``messages`` too)."""
    import httpx

    session = uuid.uuid4().hex
    body = {"data": data, "fn_index": _fn_index(url), "session_hash": session, "event_data": None}
    joined = post(f"{url}gradio_api/queue/join", json=body, timeout=30)
    if joined.status_code != 200:
        return {"refused": joined.status_code, "detail": joined.text}
    stream_url = f"{url}gradio_api/queue/data?session_hash={session}"
    with httpx.stream("GET", stream_url, timeout=timeout, verify=False) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if messages is not None:
                    messages.append(message)
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError("the stream ended without an answer")


def _file_data(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": Path(path).name}
