"""Table 6: do independently zoomed neighbours agree where they overlap?

For scale ``f**k`` the view shows a window ``w = size / f**k`` pixels wide of x0. A second chain
zooms into the window shifted right by ``w / 2`` (x0 translated left by ``w / 2`` pixels, its right
edge repeated), so the right half of the first view and the left half of the second show the same
region of x0. Their pixels, flattened, are compared by cosine similarity; the two outer halves,
which show different regions, give the non-overlapping reference (paper Appendix G).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from coz.chain import ZoomChain


def shifted(x0: Image.Image, dx: int) -> Image.Image:
    """x0 translated ``dx`` pixels to the left; the vacated right columns repeat the last one."""
    a = np.asarray(x0)
    if dx <= 0:
        return x0.copy()
    b = np.concatenate([a[:, dx:], np.repeat(a[:, -1:], dx, axis=1)], axis=1)
    return Image.fromarray(b)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denominator) if denominator else 0.0


def halves_similarity(left_view: Image.Image, right_view: Image.Image) -> tuple[float, float]:
    """(overlapping, non-overlapping) cosine similarity of two views offset by half their width."""
    a, b = np.asarray(left_view, dtype=np.float64) / 255, np.asarray(right_view, dtype=np.float64) / 255
    half = a.shape[1] // 2
    return cosine(a[:, half:], b[:, :half]), cosine(a[:, :half], b[:, half:])


def overlap_rows(
    chain: ZoomChain, x0s: list[Image.Image], states: list[list[Image.Image]]
) -> list[list[dict]]:
    """Per image, one dict per scale with ``overlap_cos`` and ``nonoverlap_cos``.

    ``states[i]`` are image i's states from ``chain`` (x0 first); the shifted chains reuse its
    backbone and prompt extractor with ``k`` steps for scale ``factor**k``.
    """
    out = [[] for _ in x0s]
    for k in range(1, chain.steps + 1):
        scale = chain.factor**k
        dx = chain.size // scale // 2
        if dx < 1:
            raise ValueError(f"scale {scale}: a {chain.size}-px x0 has no half-pixel shift to compare")
        neighbour = ZoomChain(
            chain.mode,
            chain.backbone,
            chain.prompter,
            steps=k,
            factor=chain.factor,
            size=chain.size,
            user_prompt=chain.user_prompt,
            timer=chain.timer,
        )
        zooms = neighbour.run([shifted(x0, dx) for x0 in x0s])
        for i, zoom in enumerate(zooms):
            same, other = halves_similarity(states[i][k], zoom.states[k])
            out[i].append({"scale": scale, "overlap_cos": same, "nonoverlap_cos": other})
    return out
