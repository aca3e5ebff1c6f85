"""``coz-fetch``: released files come over HTTP (here a local server) with pooch, resumed after a cut,
checked against the pinned sha256 / git object id, never kept when they are a Git LFS pointer or an
HTML page, and laid out where ``<option>=auto`` finds them; hub files come through the Hugging Face
cache (here a fake one, offline). Loading any weights file names a pointer or a page in one line."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from coz.backbones.diffusion.hub import require_file
from coz.errors import CozError
from coz.fetch.download import fetch_file, fetch_release
from coz.fetch.registry import AUTO, release

LFS = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\nsize 1234\n"
HTML = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>...</body></html>\n"


class Server:
    """Serves ``files`` (path -> bytes) with HTTP Range support; ``cut`` (path -> n) closes the first
    response for a path after n bytes, as a dropped connection does. Records (path, Range) per GET."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.sent = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server interface
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng := self.headers.get("Range"):
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if self.path in server.cut:
                    body = body[: server.cut.pop(self.path)]
                    self.close_connection = True
                self.wfile.write(body)
                server.sent += len(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def gets(self, path: str) -> list[str | None]:
        return [rng for p, rng in self.requests if p == path]


@pytest.fixture()
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


def git_object_id(path: Path) -> str:
    """The oracle for the registry's pins: git itself."""
    return subprocess.run(
        ["git", "hash-object", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


def served(server: Server, tmp_path: Path, name: str, data: bytes):
    """Serve ``data`` as ``/name``; (its url, its git object id and sha256)."""
    source = tmp_path / "served" / name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(data)
    server.files[f"/{name}"] = data
    return f"{server.url}/{name}", git_object_id(source), hashlib.sha256(data).hexdigest()


def test_the_sd3_release_is_fetched_checked_and_found_by_auto(server, tmp_path, monkeypatch):
    """The registry's coz-sd3 entry, pointed at the local server (its pins: git's own ids of the
    served bytes): laid out as the authors' ckpt/, found by backbone.transformer_lora=auto."""
    monkeypatch.setenv("COZ_WEIGHTS", str(tmp_path / "weights"))
    parts = []
    for i, remote in enumerate(release("coz-sd3").files):
        url, blob, _ = served(server, tmp_path, f"f{i}", os.urandom(3000 + i))
        parts.append(replace(remote, url=url, git_blob=blob))
    local = replace(release("coz-sd3"), files=tuple(parts))
    lines = fetch_release(local, tmp_path / "weights", progress=False)
    assert len(lines) == 2 and all("pinned commit" in line for line in lines)
    for option, what in (("backbone.transformer_lora", "f0"), ("backbone.vae_encoder", "f1")):
        path = require_file("auto", option, "the file")
        assert path == tmp_path / "weights" / AUTO[option][1]
        assert path.read_bytes() == server.files[f"/{what}"]
    assert (tmp_path / "weights" / "SR_LoRA" / "model_20001.pkl").is_file()  # the authors' layout
    before = len(server.requests)
    fetch_release(local, tmp_path / "weights", progress=False)
    assert len(server.requests) == before  # already there and right: nothing downloaded again


def test_a_cut_download_resumes_where_it_stopped(server, tmp_path):
    data = os.urandom(3 << 20)
    url, blob, digest = served(server, tmp_path, "big.pth", data)
    server.cut["/big.pth"] = 1 << 20
    remote = replace(release("dape").files[0], url=url, git_blob=blob, sha256=digest)
    with pytest.raises(CozError, match="could not download"):
        fetch_file(remote, tmp_path / "w", progress=False)
    assert not (tmp_path / "w" / remote.path).exists()
    path = fetch_file(remote, tmp_path / "w", progress=False)
    assert server.gets("/big.pth") == [None, f"bytes={1 << 20}-"]  # the rest only
    assert server.sent == len(data)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


@pytest.mark.parametrize(
    "damage, message",
    [
        ("sha256", "SHA256 hash of downloaded file"),
        ("git_blob", "not the pinned commit's"),
        ("html", "an HTML page"),
        ("lfs", "a Git LFS pointer"),
    ],
)
def test_a_wrong_download_is_refused_in_one_line_and_not_kept(server, tmp_path, damage, message):
    data = {"html": HTML, "lfs": LFS}.get(damage, os.urandom(500))
    url, blob, digest = served(server, tmp_path, "x.pth", data)
    remote = replace(release("dape").files[0], url=url, git_blob=blob, sha256=None)
    if damage == "sha256":
        remote = replace(remote, sha256=hashlib.sha256(b"other").hexdigest())
    if damage == "git_blob":
        remote = replace(remote, git_blob="0" * 40)
    with pytest.raises(CozError, match=message) as caught:
        fetch_file(remote, tmp_path / "w", progress=False)
    assert "\n" not in str(caught.value)
    assert not [p for p in (tmp_path / "w").rglob("*") if p.is_file()]  # nothing kept


def test_auto_before_fetching_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("COZ_WEIGHTS", str(tmp_path))
    with pytest.raises(CozError, match=r"backbone.osediff_pkl=auto: .* `coz-fetch osediff-sd21`"):
        require_file("auto", "backbone.osediff_pkl", "OSEDiff's osediff.pkl")


def test_hub_releases_come_through_the_hugging_face_cache(tmp_path):
    """RAM's weights from a hub space, offline from a cache laid out as huggingface_hub lays it out;
    then prompt.ram_weights=auto finds them."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "spaces--xinyu1205--recognize-anything"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    weights = os.urandom(2048)
    (repo / "snapshots" / commit / "ram_swin_large_14m.pth").write_bytes(weights)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    env["COZ_WEIGHTS"] = str(tmp_path / "w")
    result = subprocess.run(
        [sys.executable, "-m", "coz.fetch", "ram", "--no-progress"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert f"at commit {commit} (not pinned" in result.stdout
    assert hashlib.sha256(weights).hexdigest() in result.stdout  # what to pin it by
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "from coz.fetch.local import resolve; print(resolve('prompt.ram_weights', 'auto'))",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert Path(found.stdout.strip()).read_bytes() == weights


def test_offline_a_hub_release_fails_in_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "coz.fetch", "s3diff", "--dir", str(tmp_path / "w")],
        env={**env, "HTTPS_PROXY": "http://127.0.0.1:9"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: s3diff: "), result.stderr


def test_the_list_names_every_release_and_what_is_not_pinned():
    result = subprocess.run([sys.executable, "-m", "coz.fetch"], capture_output=True, text=True)
    assert result.returncode == 0
    for name in (
        "coz-sd3",
        "dape",
        "ram",
        "osediff-sd21",
        "s3diff",
        "grpo-adapter",
        "sd3-medium",
        "qwen2.5-vl-3b",
    ):
        assert f"  {name} " in result.stdout
    assert "coz-sd3        Chain" in result.stdout
    assert result.stdout.count("NOT pinned") == 7  # ram, s3diff's hub file, the adapter, four base models
    wrong = subprocess.run([sys.executable, "-m", "coz.fetch", "sd4"], capture_output=True, text=True)
    assert wrong.returncode == 2 and wrong.stderr.startswith("error: no release named sd4")


@pytest.mark.parametrize("content, named", [(LFS, "a Git LFS pointer"), (HTML, "an HTML page")])
def test_a_pointer_or_a_page_saved_as_weights_is_named_wherever_weights_load(tmp_path, content, named):
    """On main a Git LFS pointer gave a bare unpickling error."""
    from coz.backbones.cnn.span import load_weights as span_weights
    from coz.backbones.cnn.spandrel_model import read_state_dict
    from coz.backbones.diffusion.lora_formats import load_torch_file
    from coz.run.weights import torch_file

    loaders = {
        "model_20001.pkl": lambda p: require_file(
            str(p), "backbone.transformer_lora", "the transformer LoRA"
        ),
        "RealESRGAN_x4plus.pth": lambda p: torch_file("backbone.weights", p),  # also RAM, DAPE, adapters
        "vae_encoder_20001.pt": lambda p: load_torch_file(p, "VAE encoder"),  # also osediff.pkl, s3diff.pkl
        "4x_model.pth": read_state_dict,  # backbone=spandrel
        "span.safetensors": span_weights,  # backbone=span
    }
    for name, load in loaders.items():
        fake = tmp_path / name
        fake.write_bytes(content)
        with pytest.raises(CozError, match=named) as caught:
            load(fake)
        assert "\n" not in str(caught.value) and str(fake) in str(caught.value)


def test_the_zoom_command_names_a_pointer_in_one_line(tmp_path, monkeypatch, capfd):
    """The command line's own entry point, in this process (a fresh Python costs seconds)."""
    from inprocess_cli import run_cli_here
    from PIL import Image

    from coz.zoom import main

    Path(tmp_path / "lora.pkl").write_bytes(LFS)
    Path(tmp_path / "vae.pt").write_bytes(LFS)
    Image.new("RGB", (32, 32)).save(tmp_path / "in.png")
    args = ["input=in.png", "backbone=sd3", "backbone.model=none", "zoom.steps=1"]
    args += ["backbone.transformer_lora=lora.pkl", "backbone.vae_encoder=vae.pt", "hydra.run.dir=run"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli_here(main, args, tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert errors[0].startswith(
        "error: backbone.transformer_lora=lora.pkl: a Git LFS pointer, not the weights"
    )
