"""A study folder's ``manifest.json``: what `build` decided, read back by `serve` and `report`.

Its SHA-256 travels with every vote, so votes are never mixed between two versions of a study.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from coz.errors import CozError

MANIFEST = "manifest.json"


def load_manifest(study_dir: str | Path) -> dict[str, Any]:
    """The manifest with ``sha256`` (of its bytes) and ``folder`` added; one line if it is not there."""
    folder = Path(str(study_dir)).expanduser()
    path = folder / MANIFEST
    if not folder.is_dir():
        raise CozError(f"study={study_dir}: no such folder (python -m coz.study build writes one)")
    try:
        data = path.read_bytes()
        manifest = json.loads(data)
        manifest["questions"], manifest["raters"], manifest["methods"]  # noqa: B018 - the keys must be there
    except FileNotFoundError:
        raise CozError(
            f"study={study_dir}: no {MANIFEST} here; is it a study folder (python -m coz.study build)?"
        ) from None
    except (ValueError, KeyError, TypeError) as err:
        raise CozError(f"{path}: not a study manifest ({type(err).__name__}: {err})") from None
    manifest["sha256"] = hashlib.sha256(data).hexdigest()
    manifest["folder"] = str(folder.resolve())
    return manifest


def plan_of(manifest: dict[str, Any], rater_number: int) -> list[dict]:
    """The questions of the ``rater_number``-th rater (1, 2, ...): the slots in turn, again from the
    first once every slot is taken."""
    slots = manifest["raters"]
    return slots[(rater_number - 1) % len(slots)]
