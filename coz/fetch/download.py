"""Downloading one release: plain files with pooch (resumed, checked), hub files with huggingface_hub
(which resumes and caches them itself), then each file checked and laid out under the weights folder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from coz.errors import RunEnvironmentError
from coz.fetch.registry import HubFiles, Release, RemoteFile
from coz.run.atomic import link_or_copy_atomic
from coz.run.weights import placeholder


def git_blob_sha1(path: Path) -> str:
    """Git's object id of a file: SHA-1 over ``"blob <size>\\0"`` then the content."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    return _digest(path, digest)


def sha256(path: Path) -> str:
    return _digest(path, hashlib.sha256())


def _digest(path: Path, digest) -> str:
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class ResumingDownloader:
    """A pooch downloader that keeps what it received in ``.<url hash>.part`` beside the target and
    asks the server for the rest (an HTTP Range request) when a download starts again."""

    def __init__(self, progress: bool = True, timeout: float = 60):
        self.progress = progress
        self.timeout = timeout

    def __call__(self, url: str, output_file, pooch_obj=None, check_only: bool = False):
        import requests
        from tqdm import tqdm

        if check_only:
            return requests.head(url, allow_redirects=True, timeout=self.timeout).ok
        output = Path(output_file)
        part = output.parent / f".{hashlib.sha1(url.encode()).hexdigest()[:16]}.part"
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as response:
            if have and response.status_code == 416:  # nothing left to send: the part is whole
                os.replace(part, output)
                return
            response.raise_for_status()
            if have and response.status_code != 206:  # the server ignored the range: start over
                have = 0
            size = response.headers.get("Content-Length")
            total = int(size) + have if size else None
            name = url.rsplit("/", 1)[-1]
            with (
                part.open("ab" if have else "wb") as f,
                tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, desc=name, disable=not self.progress
                ) as bar,
            ):
                for chunk in response.iter_content(chunk_size=1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
        os.replace(part, output)


def fetch_file(remote: RemoteFile, root: Path, progress: bool = True) -> Path:
    """``remote`` at ``root / remote.path``, checked: its sha256 (by pooch) and git object id where
    the registry pins them, and never a Git LFS pointer or an HTML page. Already there and right:
    nothing is downloaded."""
    import pooch

    target = root / remote.path
    if target.is_file() and _problem(target, remote):
        target.unlink()  # a damaged or foreign file: fetch it again
    target.parent.mkdir(parents=True, exist_ok=True)
    pooch.get_logger().setLevel("WARNING")
    try:
        pooch.retrieve(
            remote.url,
            known_hash=f"sha256:{remote.sha256}" if remote.sha256 else None,
            fname=target.name,
            path=target.parent,
            downloader=ResumingDownloader(progress),
        )
    except ValueError as err:  # pooch: the sha256 is not the pinned one (the download is deleted)
        raise RunEnvironmentError(f"{remote.url}: {' '.join(str(err).split())}") from None
    except OSError as err:  # requests' errors are OSErrors
        raise RunEnvironmentError(f"{remote.url}: could not download it ({_first_line(err)})") from None
    if problem := _problem(target, remote):
        target.unlink()
        raise RunEnvironmentError(f"{remote.url}: {problem}; nothing kept")
    return target


def _problem(path: Path, remote: RemoteFile) -> str | None:
    if found := placeholder(path):
        return f"got {found}"
    if remote.sha256 and (got := sha256(path)) != remote.sha256:
        return f"sha256 {got}, not the pinned {remote.sha256}"
    if remote.git_blob and (got := git_blob_sha1(path)) != remote.git_blob:
        return f"git object id {got}, not the pinned commit's {remote.git_blob}"
    return None


def fetch_hub(hub: HubFiles, root: Path, revision: str | None = None) -> tuple[str, list[Path]]:
    """(the commit fetched, the files laid out under ``root``): through the Hugging Face cache,
    where the base models stay (found by hub id, as the configs name them)."""
    from huggingface_hub import hf_hub_download, snapshot_download

    revision = revision or hub.revision
    try:
        if not hub.files:
            folder = snapshot_download(hub.repo_id, repo_type=hub.repo_type, revision=revision)
            return Path(folder).name, []
        placed = []
        for name in hub.files:
            cached = Path(hf_hub_download(hub.repo_id, name, repo_type=hub.repo_type, revision=revision))
            if found := placeholder(cached):
                raise RunEnvironmentError(f"{hub.repo_id}/{name}: got {found}")
            if hub.place:
                placed.append(link_or_copy_atomic(cached, root / hub.place / name))
        return cached.parent.name, placed  # the snapshot folder is named by its commit
    except RunEnvironmentError:
        raise
    except Exception as err:  # noqa: BLE001 - offline, gated, unknown revision: one line each
        raise RunEnvironmentError(
            f"{hub.repo_id} ({hub.repo_type}): {type(err).__name__}: {_first_line(err)}"
        ) from None


def fetch_release(
    release: Release, root: Path, progress: bool = True, revision: str | None = None
) -> list[str]:
    """Fetch every part of ``release``; one line per part saying what was fetched and what pins it."""
    lines = []
    for remote in release.files:
        path = fetch_file(remote, root, progress)
        pin = (
            "branch main, not pinned"
            if not remote.pinned
            else f"sha256 {remote.sha256}"
            if remote.sha256
            else f"git object {remote.git_blob} at a pinned commit"
        )
        lines.append(f"{path} ({pin}; sha256 {sha256(path)})" if not remote.sha256 else f"{path} ({pin})")
    for hub in release.hub:
        commit, placed = fetch_hub(hub, root, revision)
        pin = "pinned" if (revision or hub.revision) else "not pinned: the hub's main"
        lines.append(f"{hub.repo_id} at commit {commit} ({pin}; --revision {commit} fetches the same again)")
        lines += [f"{path} (sha256 {sha256(path)})" for path in placed]
    return lines


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:300]
