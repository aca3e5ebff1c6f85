"""Prompt hygiene promises (README, Prompt modes) with oracles written here: the authors' own
instruction echoed back is dropped, and CLIP's limit is 77 tokens, start and end included."""

from __future__ import annotations

import pytest

from coz.prompts.hygiene import clean_prompt, warn_if_clip_truncates


@pytest.mark.parametrize(
    "raw",
    [
        "Based on this knowledge, tabby cat, green grass",
        "based on this knowledge: tabby cat, green grass",
        "tabby cat, green grass, based on this knowledge",
    ],
)
def test_the_instructions_own_words_are_dropped(raw):
    assert clean_prompt(raw) == "tabby cat, green grass"


def test_clip_cuts_after_75_words_of_one_token_each(caplog):
    """CLIP keeps 77 tokens: <|startoftext|>, 75 of the text, <|endoftext|>. "cat" is one token."""
    assert not warn_if_clip_truncates(" ".join(["cat"] * 75), "step 1")
    assert warn_if_clip_truncates(" ".join(["cat"] * 76), "step 1")
    assert "step 1" in caplog.text
