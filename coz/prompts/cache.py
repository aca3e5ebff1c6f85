"""A prompt cache keyed by what the extractor saw: the pixels of (previous, view) and its identity.

Sweeps revisit the same views (every zoom mode, backbone and resumed run starts from the same x0,
so step 1's views are identical), and a VLM call costs far more than hashing two 512x512 images.
Entries live in memory for the whole process (so the jobs of one ``-m`` sweep share them) and,
with ``cache: disk``, in one JSON file per extractor identity that later runs reuse.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from PIL import Image

from coz.prompts.base import PromptExtractor
from coz.run.atomic import write_text_atomic

log = logging.getLogger("coz.prompts")

_MEMORY: dict[str, dict[str, str]] = {}  # identity digest -> {pair key -> raw prompt}


def identity_digest(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def image_digest(image: Image.Image | None, h) -> None:
    """Feed the exact pixels (and size/mode) of ``image`` into hash ``h``; None is its own value."""
    if image is None:
        h.update(b"none;")
        return
    h.update(f"{image.mode}:{image.width}x{image.height};".encode())
    h.update(image.tobytes())


def pair_key(identity: str, view: Image.Image, previous: Image.Image | None) -> str:
    h = hashlib.sha256(identity.encode() + b"\0")
    image_digest(previous, h)
    image_digest(view, h)
    return h.hexdigest()


class PromptCache:
    """In-memory (process-wide) and optionally on-disk store of raw prompts for one identity."""

    def __init__(self, identity: str, folder: str | Path | None = None) -> None:
        self.identity = identity
        self.entries = _MEMORY.setdefault(identity_digest(identity), {})
        self.path = Path(folder).expanduser() / f"{identity_digest(identity)}.json" if folder else None
        self.hits = self.misses = 0
        if self.path and self.path.exists():
            self.entries.update(self._read())

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as err:
            log.warning("prompt cache %s unreadable (%s): starting afresh", self.path, err)
            return {}
        if data.get("identity") != self.identity:  # a digest collision or a hand-edited file
            return {}
        return dict(data.get("prompts", {}))

    def get(self, key: str) -> str | None:
        text = self.entries.get(key)
        if text is None:
            self.misses += 1
        else:
            self.hits += 1
        return text

    def put(self, items: dict[str, str]) -> None:
        self.entries.update(items)
        if self.path:  # merge with what another process may have written meanwhile
            merged = {**self._read(), **self.entries} if self.path.exists() else dict(self.entries)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.path, json.dumps({"identity": self.identity, "prompts": merged}, indent=0))


class CachedPrompts(PromptExtractor):
    """Wraps an extractor: only views not seen before (with the same previous state) are extracted,
    together in one batch."""

    def __init__(self, inner: PromptExtractor, cache: PromptCache) -> None:
        self.inner, self.cache = inner, cache
        self.name = inner.name

    def extract(self, views: list[Image.Image], previous: list[Image.Image | None]) -> list[str]:
        if not getattr(self.inner, "multiscale", True):  # an AR-1 extractor ignores the previous state
            previous = [None] * len(views)
        keys = [pair_key(self.cache.identity, v, p) for v, p in zip(views, previous, strict=True)]
        texts = [self.cache.get(k) for k in keys]
        todo = [i for i, t in enumerate(texts) if t is None]
        if todo:
            fresh = self.inner.extract([views[i] for i in todo], [previous[i] for i in todo])
            for i, text in zip(todo, fresh, strict=True):
                texts[i] = text
            self.cache.put({keys[i]: texts[i] for i in todo})
        return texts
