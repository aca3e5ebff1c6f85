"""Prompt hygiene: what the SR model should see of a VLM's answer.

Before fine-tuning, the prompt VLM loops ("texture orange fur texture orange fur ...") and talks
about the views ("The second image shows ...") (paper Appendix J; section 3.3 rewards against both
with R_rep and R_phrase). ``clean_prompt`` removes both from the text itself, so even an un-tuned
VLM gives the SR model a short set of words.

The SR text encoders take the prompt verbatim and CLIP truncates it at 77 tokens (start and end
included; docs/fidelity.md "Prompts"); ``warn_if_clip_truncates`` counts with CLIP's real
BPE vocabulary (shipped in the ``openai-clip`` wheel) and logs one line when text is cut.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import logging
import re
import tempfile
import unicodedata
from pathlib import Path

from PIL import Image

from coz.prompts.base import PromptExtractor

log = logging.getLogger("coz.prompts")

CLIP_MAX_TOKENS = 77  # including <|startoftext|> and <|endoftext|>

_VIEW = r"(?:image|picture|photo|view|crop)"
_VERB = r"(?:shows|show|depicts|contains|features|displays|is|appears to (?:show|be))"
# Viewpoint markers and boilerplate the SR model cannot use (paper section 3.3, R_phrase; Appendix J.2).
UNWANTED = [
    re.compile(p, re.I)
    for p in (
        r"\bbased on this knowledge\b",
        r"\b(?:(?:is|as) )?an? zoom(?:ed)?[- ]?in (?:of|on) (?:the |this )?(?:first |previous )?"
        + _VIEW
        + r"\b",
        r"\b(?:(?:in|of|from) )?(?:the |this |that )?(?:first|second|1st|2nd|previous|original|zoomed[- ]in|"
        r"zoom[- ]in|other) " + _VIEW + r"s?\b(?: " + _VERB + r"\b)?",
        r"\b(?:(?:in|of) )?(?:the|this|that) " + _VIEW + r"(?: " + _VERB + r"\b)?",
        r"^\s*(?:sure|certainly|okay|ok)\b[,.!:]?",
        r"^\s*(?:here (?:is|are) )?(?:an? |the |some )?(?:set|list) of (?:key ?)?words(?: describing \w+)?\s*:?",
        r"^\s*(?:here (?:is|are) )?(?:some |the )?(?:key ?)?words\s*:",
    )
]
# Where one item of a "set of words" ends: commas, semicolons, new lines, bullets, sentence ends.
# A line break separates items only before a bullet or a number ("- sky", "2. sky"); elsewhere
# it is wrapping inside a run of words.
_SEPARATORS = re.compile(
    r"\s*(?:[,;|•·]+|\n(?=\s*(?:[-*•]|\d+[.)])\s)|(?<=[^\W\d_]{2})\.(?:\s+|$)"
    r"|\s+-\s+|\.{3}|…)\s*"
)
_BULLET = re.compile(r"^(?:[-*•]+|\d+[.)])(?=\s)\s*")
_EDGE_JUNK = re.compile(r"^[\s\W_]+|[\s\W_]+$")
_DANGLING = re.compile(r"^(?:and|or|of|in|with|a|an|the)\s+|\s+(?:and|or|of|in|with|a|an|the)$", re.I)


def clean_prompt(text: str, max_ngram: int = 8) -> str:
    """Strip, drop view-referring phrases, collapse repeats and normalise separators to ", ".

    >>> clean_prompt("tree, Tree , tree; sky")
    'tree, sky'
    """
    text = unicodedata.normalize("NFKC", text).replace("\u200b", "").replace("\r", "")
    items: list[str] = []
    seen: set[str] = set()
    for raw in _SEPARATORS.split(text):
        item = _BULLET.sub("", raw.strip())
        for pattern in UNWANTED:
            item = pattern.sub(" ", item)
        item = " ".join(_collapse_loops(item.split(), max_ngram))
        for _ in range(2):  # "in the second image, trees" leaves "in" or "and" dangling
            item = _DANGLING.sub("", _EDGE_JUNK.sub("", item))
        key = item.lower()
        if item and key not in seen:
            seen.add(key)
            items.append(item)
    return ", ".join(items)


def _collapse_loops(words: list[str], max_ngram: int) -> list[str]:
    """Collapse tandem repeats ("fur fur fur", "orange fur orange fur") and cut a looping tail.

    A tail counts as a loop when it starts with a bigram seen earlier and most of its bigrams
    (at least 60 %) repeat earlier ones: that is where the model began cycling (Appendix J.1).
    """
    low = [w.lower() for w in words]
    changed = True
    while changed:
        changed = False
        for n in range(1, min(max_ngram, len(low) // 2) + 1):
            i = 0
            while i + 2 * n <= len(low):
                if low[i : i + n] == low[i + n : i + 2 * n]:
                    del low[i + n : i + 2 * n], words[i + n : i + 2 * n]
                    changed = True
                else:
                    i += 1
    bigrams = list(zip(low, low[1:], strict=False))
    for start in range(1, len(bigrams)):
        if bigrams[start] not in bigrams[:start]:
            continue
        tail = bigrams[start:]
        repeated = sum(1 for j, b in enumerate(tail) if b in bigrams[: start + j])
        if len(tail) >= 2 and repeated / len(tail) >= 0.6:
            return words[:start]
    return words


@functools.lru_cache(maxsize=1)
def clip_tokenizer():
    """CLIP's exact BPE tokenizer, built offline from ``bpe_simple_vocab_16e6.txt.gz``.

    The vocabulary file ships in the ``openai-clip`` wheel (install it with ``--no-deps``); we
    locate it without importing that package (which would need ftfy) and give transformers'
    CLIPTokenizer its vocab/merges files positionally (the keyword form silently yields unknown
    ids in transformers 5; offline-assets.md).
    """
    spec = importlib.util.find_spec("clip")
    path = (
        Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz" if spec else None
    )
    if path is None or not path.exists():
        raise ImportError(
            "counting CLIP tokens needs CLIP's BPE vocabulary: pip install --no-deps openai-clip"
        )
    merges = gzip.open(path, "rt", encoding="utf-8").read().split("\n")[1 : 49152 - 256 - 2 + 1]
    byte_chars = _bytes_to_unicode()
    vocab = [
        *byte_chars,
        *(c + "</w>" for c in byte_chars),
        *("".join(m.split()) for m in merges),
        "<|startoftext|>",
        "<|endoftext|>",
    ]
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        return CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"))


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable character table, in vocabulary order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def clip_token_count(text: str) -> int:
    """Number of CLIP tokens of ``text``, start and end tokens included."""
    return len(clip_tokenizer()(text)["input_ids"])


def warn_if_clip_truncates(text: str, where: str, limit: int = CLIP_MAX_TOKENS) -> bool:
    """Log one warning naming ``where`` (step/image) when CLIP would cut ``text``; True if it would."""
    ids = clip_tokenizer()(text)["input_ids"]
    if len(ids) <= limit:
        return False
    cut = clip_tokenizer().decode(ids[limit - 1 : -1])
    log.warning(
        "%s: prompt has %d CLIP tokens (limit %d); CLIP drops its end: %r", where, len(ids), limit, cut
    )
    return True


class CleanPrompts(PromptExtractor):
    """Wraps an extractor: its texts go through ``clean_prompt``.

    ``check_clip`` is read by the zoom chain, which checks each final prompt (the user prompt
    appended) and names the image and step in the warning (:meth:`coz.chain.ZoomChain.check_clip`).
    """

    def __init__(self, inner: PromptExtractor, clean: bool = False, check_clip: bool = True) -> None:
        self.inner, self.clean, self.check_clip = inner, clean, check_clip
        self.name = inner.name

    def extract(self, views: list[Image.Image], previous: list[Image.Image | None]) -> list[str]:
        return [clean_prompt(t) if self.clean else t.strip() for t in self.inner.extract(views, previous)]
