"""Prompt hygiene: the paper's Appendix J failure cases and hand cases; CLIP token counting."""

from __future__ import annotations

import logging

import pytest

from coz.prompts.hygiene import clean_prompt, clip_token_count, warn_if_clip_truncates

# Appendix J.1 (repetition) and J.2 (unwanted phrases), as Qwen2.5-VL-3B answered before GRPO.
J1 = (
    "fur texture orange background animal fur close-up pattern\n"
    "texture orange fur texture orange fur background orange fur\n"
    "texture orange fur background orange fur texture orange fur\n"
    "texture orange fur texture orange fur texture orange fur texture\n"
    "orange fur texture orange fur texture orange fur texture orange\n"
    "fur texture orange fur texture orange fur texture orange fur ..."
)
J2 = (
    "The second image shows a close-up view of a surface with a\n"
    "textured pattern. The texture appears to be a combination of\n"
    "smooth and slightly raised areas, giving it a somewhat wavy or\n"
    "ripple-like appearance. The color gradient ranges from a lighter\n"
    "shade at the top to a darker shade at the bottom, creating a sense\n"
    "of depth and dimension."
)


def test_appendix_j1_loop_is_cut_where_it_starts():
    assert clean_prompt(J1) == "fur texture orange background animal fur close-up pattern"


def test_appendix_j2_view_phrases_are_dropped():
    cleaned = clean_prompt(J2)
    assert "image" not in cleaned.lower() and "second" not in cleaned.lower()
    assert cleaned.startswith("close-up view of a surface with a textured pattern, texture appears")
    assert "." not in cleaned


def test_appendix_j_after_grpo_answers_are_untouched():
    for text in ("fur", "feathers", "crab claw", "ant leg"):
        assert clean_prompt(text) == text


@pytest.mark.parametrize(
    "raw,clean",
    [
        ("tree, tree, tree", "tree"),
        ("tree tree tree", "tree"),
        ("Tree, tree,  sky.", "Tree, sky"),
        ("orange fur orange fur orange fur", "orange fur"),
        ("feathers; feathers | feathers", "feathers"),
        ("1. cat\n2. dog\n3. cat", "cat, dog"),
        ("- grass\n- sky\n* cloud", "grass, sky, cloud"),
        ("Here is a set of words: leaves, branches", "leaves, branches"),
        ("Sure! bark, moss", "bark, moss"),
        ("trees in the second image, sky", "trees, sky"),
        ("first image: mountain; second image: snow", "mountain, snow"),
        ("The image shows a cat on a mat.", "cat on a mat"),
        ("red car and blue car", "red car and blue car"),  # repeated word, no loop: kept
        ("3.5 inch screw, U.S. flag", "3.5 inch screw, U.S. flag"),
        ("  \n ", ""),
        ("The second image is a zoom-in of the first image.", ""),
    ],
)
def test_hand_cases(raw, clean):
    assert clean_prompt(raw) == clean


def test_clip_token_count_uses_the_real_vocabulary():
    # CLIP ids of "a photo of a cat": 49406 320 1125 539 320 2368 49407
    assert clip_token_count("a photo of a cat") == 7
    assert clip_token_count("orange fur texture!!") == 6  # "!!" is one BPE token


def test_clip_truncation_warns_once_naming_the_step(caplog):
    with caplog.at_level(logging.WARNING, logger="coz.prompts"):
        assert not warn_if_clip_truncates("fur, feathers", "step 1, image cat")
        assert warn_if_clip_truncates(" ".join(["fur"] * 80) + " whiskers", "step 2, image cat")
    [record] = caplog.records
    assert "step 2, image cat" in record.message and "84 CLIP tokens" in record.message
    assert "whiskers" in record.message
