"""Where the policy and critic VLMs come from, checked before anything loads: a missing model is one
line naming it and how to get it (``HF_HUB_OFFLINE=1`` is honoured; nothing retries)."""

from __future__ import annotations

import os
from pathlib import Path

from coz.backbones.diffusion.hub import hub_offline, refuse_if_hub_unreachable
from coz.errors import CozError


def check_available(model: str, revision: str | None, option: str) -> None:
    """Fail at once, in one line, if ``model`` (a hub id or a folder) cannot be loaded offline."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CozError(f"{option}={model}: folder has no config.json (give a saved model folder)")
        return
    if model.startswith(("/", ".", "~")) or model.count("/") != 1:
        raise CozError(f"{option}={model}: no such folder, and not a Hugging Face hub id (owner/name)")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model, "config.json", revision=revision), str):
        return
    if hub_offline():
        raise CozError(missing_message(model, revision, option))
    refuse_if_hub_unreachable(model, option)


def missing_message(model: str, revision: str | None, option: str) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    where = "in the Hugging Face cache (HF_HUB_OFFLINE is set)" if offline else "locally or on the hub"
    pinned = f" (revision {revision})" if revision else ""
    fetch = f"hf download {model}" + (f" --revision {revision}" if revision else "")
    return (
        f"{option}={model}{pinned}: not found {where}. Download it once with `{fetch}` "
        f"(it goes to the HF cache, $HF_HOME), or set {option}=/path/to/a/local/folder"
    )


def cached_commit(model: str, revision: str | None) -> str | None:
    """The commit hash of the cached snapshot that loading ``model`` uses (recorded in run.json)."""
    if Path(model).expanduser().is_dir():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - a record, never a reason to fail
        return None
    return Path(found).parent.name if isinstance(found, str) else None
