"""Where diffusion base models and checkpoints come from: a Hugging Face hub id (the user's cache,
or a download when online) or a local folder. A missing one fails at once with one message that
names it and says how to provide it; ``HF_HUB_OFFLINE=1`` is honoured, nothing retries."""

from __future__ import annotations

import os
from pathlib import Path

from coz.errors import CozError


def hub_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return False


def refuse_if_hub_unreachable(model: str, option: str) -> None:
    """Before downloading ``model`` (not in the cache, not offline): one quick request to the hub. With
    no network, huggingface_hub retries each file with back-off, minutes in all before its error;
    unreachable here is one line at once. Any answer, even an error status, means it is reachable."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=10)
    except Exception as err:  # noqa: BLE001 - whatever the HTTP client raises: no answer
        raise CozError(
            f"{option}={model}: not in the Hugging Face cache, and {constants.ENDPOINT} cannot be reached "
            f"({type(err).__name__}); download it where there is network (`hf download {model}`), or set "
            f"{option}=/path/to/a/local/copy"
        ) from None


def check_available(model: str, revision: str | None, option: str, index_file: str = "config.json") -> bool:
    """Fail at once, in one line, if ``model`` (a hub id or a folder holding ``index_file``) can
    neither be loaded from disk nor downloaded; True if it is on disk (a folder, or in the cache)."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / index_file).is_file():
            raise CozError(
                f"{option}={model}: folder has no {index_file} (give a model folder as save_pretrained "
                "or `hf download` writes it)"
            )
        return True
    if model.startswith(("/", ".", "~")) or model.count("/") != 1:
        raise CozError(f"{option}={model}: no such folder, and not a Hugging Face hub id (owner/name)")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model, index_file, revision=revision), str):
        return True
    if hub_offline():
        raise CozError(missing_message(model, revision, option))
    refuse_if_hub_unreachable(model, option)
    return False


def missing_message(model: str, revision: str | None, option: str) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    where = "in the Hugging Face cache (HF_HUB_OFFLINE is set)" if offline else "locally or on the hub"
    pinned = f" (revision {revision})" if revision else ""
    fetch = f"hf download {model}" + (f" --revision {revision}" if revision else "")
    return (
        f"{option}={model}{pinned}: not found {where}. Download it once with `{fetch}` (it goes to "
        f"the HF cache, $HF_HOME; accept its licence on the hub first if it is gated), or set "
        f"{option}=/path/to/a/local/folder"
    )


def resolve_model(model: str, option: str, index_file: str = "model_index.json") -> tuple[str, bool]:
    """(where to load from, local_files_only) for a hub id or folder; CozError if unavailable.

    ``option`` is the config key users set (e.g. ``backbone.model``), named in the message.
    """
    on_disk = check_available(model, None, option, index_file)
    path = Path(model).expanduser()
    return (str(path) if path.is_dir() else model), on_disk


def require_file(path: str | None, option: str, what: str) -> Path:
    """An existing checkpoint file, or one CozError naming the option and the expected file."""
    from coz.fetch.local import resolve
    from coz.run.weights import refuse_placeholder

    if path in (None, "", "null"):
        raise CozError(f"{option} is not set: give the path of {what}")
    path = resolve(option, path)  # auto: the file coz-fetch laid out
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise CozError(f"{option}={path}: no such file ({what})")
    refuse_placeholder(option, p)
    return p
