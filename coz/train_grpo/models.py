"""Which snapshot of the policy and critic VLMs a run used. Whether they can be loaded is checked
before anything loads by :func:`coz.backbones.diffusion.hub.check_available`."""

from __future__ import annotations

from pathlib import Path


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
