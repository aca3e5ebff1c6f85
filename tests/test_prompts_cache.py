"""The prompt cache: keyed by the pixels of (previous, view) and the extractor's identity."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from coz.prompts.base import PromptExtractor
from coz.prompts.cache import _MEMORY, CachedPrompts, PromptCache


class Counting(PromptExtractor):
    """Says the mean pixel value of each view; records every batch it was asked for."""

    name = "counting"

    def __init__(self, multiscale: bool = True) -> None:
        self.batches: list[int] = []
        self.multiscale = multiscale

    def extract(self, views, previous):
        self.batches.append(len(views))
        return [
            f"mean {np.asarray(v).mean():.2f} prev {p is not None}"
            for v, p in zip(views, previous, strict=True)
        ]


@pytest.fixture(autouse=True)
def _fresh_memory():
    _MEMORY.clear()
    yield
    _MEMORY.clear()


def img(value: int) -> Image.Image:
    return Image.new("RGB", (64, 64), (value, value, value))


def test_hits_and_misses_by_pixels_and_previous():
    inner = Counting()
    prompts = CachedPrompts(inner, PromptCache("id-a"))
    first = prompts.extract([img(1), img(2)], [img(0), img(0)])
    assert inner.batches == [2] and prompts.cache.misses == 2
    # same pixels in new objects: hits; one new view: only it is extracted
    again = prompts.extract([img(2), img(3), img(1)], [img(0), img(0), img(0)])
    assert again[0] == first[1] and again[2] == first[0]
    assert inner.batches == [2, 1] and (prompts.cache.hits, prompts.cache.misses) == (2, 3)
    # the same view with another previous state (or none) is another prompt
    prompts.extract([img(1), img(1)], [img(9), None])
    assert inner.batches == [2, 1, 2]
    # one changed pixel is a miss
    changed = img(1)
    changed.putpixel((3, 3), (0, 0, 0))
    prompts.extract([changed], [img(0)])
    assert inner.batches[-1] == 1


def test_identity_separates_extractors_and_memory_is_process_wide():
    a, b = Counting(), Counting()
    CachedPrompts(a, PromptCache("id-a")).extract([img(1)], [None])
    CachedPrompts(b, PromptCache("id-b")).extract([img(1)], [None])
    assert a.batches == [1] and b.batches == [1]
    again = Counting()  # a new run of the same extractor (e.g. the next job of a sweep)
    CachedPrompts(again, PromptCache("id-a")).extract([img(1)], [None])
    assert again.batches == []


def test_ar1_extractor_ignores_previous_in_the_key():
    inner = Counting(multiscale=False)
    prompts = CachedPrompts(inner, PromptCache("id-ar1"))
    prompts.extract([img(1)], [img(0)])
    prompts.extract([img(1)], [img(7)])
    assert inner.batches == [1]


def test_disk_cache_survives_the_process(tmp_path):
    inner = Counting()
    texts = CachedPrompts(inner, PromptCache("id-disk", tmp_path)).extract([img(1), img(2)], [None, None])
    [file] = tmp_path.glob("*.json")
    data = json.loads(file.read_text())
    assert data["identity"] == "id-disk" and sorted(data["prompts"].values()) == sorted(texts)
    _MEMORY.clear()  # as if a new process
    later = Counting()
    cache = PromptCache("id-disk", tmp_path)
    assert CachedPrompts(later, cache).extract([img(2), img(1)], [None, None]) == texts[::-1]
    assert later.batches == [] and cache.hits == 2
    _MEMORY.clear()
    other = Counting()
    CachedPrompts(other, PromptCache("id-other", tmp_path)).extract([img(1)], [None])
    assert other.batches == [1] and len(list(tmp_path.glob("*.json"))) == 2


def test_unreadable_disk_cache_starts_afresh(tmp_path, caplog):
    cache = PromptCache("id-x", tmp_path)
    cache.path.write_text("{not json")
    _MEMORY.clear()
    inner = Counting()
    CachedPrompts(inner, PromptCache("id-x", tmp_path)).extract([img(1)], [None])
    assert inner.batches == [1] and "unreadable" in caplog.text
