"""``make mutate``'s catalogue stays applicable: a snippet the code no longer holds makes its mutation
*stale*, which the mutation report leaves out of its caught share, so a refactor could quietly shrink
what the catalogue checks. Every edit must find its text exactly once, in order, as ``make mutate``
applies it (tests/mutations/__main__.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mutations.catalogue import MUTATIONS

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.id for m in MUTATIONS])
def test_every_mutation_still_applies(mutation):
    text = (REPO / mutation.file).read_text(encoding="utf-8")
    for old, new in mutation.edits:
        assert text.count(old) == 1, (
            f"{mutation.id}: {old!r} occurs {text.count(old)} times in {mutation.file}"
        )
        text = text.replace(old, new)


def test_mutation_ids_are_unique():
    ids = [m.id for m in MUTATIONS]
    assert len(ids) == len(set(ids))
