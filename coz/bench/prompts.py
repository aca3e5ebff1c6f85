"""``python -m coz.bench.prompts``: batched versus one-by-one prompt extraction on this machine.

``prompt=tiny_vlm`` (the random-weight Qwen2.5-VL twin: real tokenizer, chat template, image
processing and batched greedy generation) on AR-2 pairs made from the real sample photos: the
previous 512 scale-state and the bicubic zoom of its center quarter. For 8 and 32 views: one
``extract`` call per view versus one call for all, median of ``--repeats`` runs after a warm-up,
with the prompt cache off (``prompt.cache=none``; otherwise every run after the first is a cache
hit). The batched texts are checked to equal the one-by-one texts. Writes
``experiments/bench/prompts.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image

from coz.bench.report import OUT_DIR, median_time, write_report

SIZE = 512  # the scale-state size of the chain
ZOOM = 4  # the zoom factor of one step


def ar2_pairs(n: int) -> tuple[list[Image.Image], list[Image.Image]]:
    """``n`` (view, previous) pairs: previous = a square crop of a sample photo resized to 512 (the
    crop shifts with the pair's index, so pairs differ), view = the bicubic zoom of its center."""
    from coz.geometry import zoom_view
    from coz.samples import write_samples

    photos = [
        Image.open(p).convert("RGB") for p in write_samples(Path(tempfile.gettempdir()) / "coz-bench-samples")
    ]
    views, previous = [], []
    for i in range(n):
        photo = photos[i % len(photos)]
        variant = i // len(photos)
        side = int(min(photo.size) * (1.0 - 0.04 * (variant % 8)))
        left = (photo.width - side) * (variant % 3) // 2
        top = (photo.height - side) * ((variant // 3) % 3) // 2
        state = photo.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.BICUBIC)
        previous.append(state)
        views.append(zoom_view(state, ZOOM, SIZE))
    return views, previous


def build_extractor(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from coz.prompts import build_prompt_extractor
    from coz.run.cli import tool_config_dir

    with initialize_config_dir(config_dir=tool_config_dir("zoom"), version_base="1.3"):
        cfg = compose(config_name="zoom", overrides=["input=x.png", "prompt=tiny_vlm", *overrides])
    if str(cfg.prompt.cache) != "none":
        raise ValueError("the benchmark must run with prompt.cache=none")
    return build_prompt_extractor(cfg.prompt), cfg.prompt


def bench_views(extractor, n: int, repeats: int) -> dict:
    views, previous = ar2_pairs(n)

    def one_by_one() -> list[str]:
        return [extractor.extract([v], [p])[0] for v, p in zip(views, previous, strict=True)]

    def batched() -> list[str]:
        return extractor.extract(views, previous)

    sequential_texts, batched_texts = one_by_one(), batched()  # also the warm-up of both
    mismatches = [i for i, (a, b) in enumerate(zip(sequential_texts, batched_texts, strict=True)) if a != b]
    t_seq, runs_seq = median_time(one_by_one, repeats, warmup=0)
    t_bat, runs_bat = median_time(batched, repeats, warmup=0)
    return {
        "what": f"{n} AR-2 views (previous 512 state + bicubic x{ZOOM} zoom of its center), "
        f"one extract() per view vs one extract() for all",
        "views": n,
        "one_by_one_s": round(t_seq, 4),
        "batched_s": round(t_bat, 4),
        "per_view_one_by_one_s": round(t_seq / n, 4),
        "per_view_batched_s": round(t_bat / n, 4),
        "speedup": round(t_seq / t_bat, 3),
        "batched_equals_one_by_one": not mismatches,
        "mismatched_views": mismatches,
        "example_prompt": batched_texts[0],
        "runs_one_by_one_s": runs_seq,
        "runs_batched_s": runs_bat,
    }


def main(argv: list[str] | None = None) -> dict:

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--views", type=int, nargs="+", default=[8, 32])
    parser.add_argument(
        "overrides", nargs="*", help="extra prompt.* overrides, e.g. prompt.max_new_tokens=32"
    )
    args = parser.parse_args(argv)

    extractor, cfg = build_extractor(["prompt.cache=none", *args.overrides])
    results = {}
    for n in args.views:
        results[f"views_{n}"] = {
            **bench_views(extractor, n, args.repeats),
            "prompt": f"tiny_vlm (max_new_tokens {cfg.max_new_tokens}, max_pixels {cfg.max_pixels}, cache none)",
        }
    path = write_report("prompts", results, command="python -m coz.bench.prompts")
    print(path.read_text())
    print(f"written: {path} and {OUT_DIR / 'prompts.json'}")
    bad = [k for k, r in results.items() if not r["batched_equals_one_by_one"]]
    if bad:
        raise SystemExit(f"batched prompts differ from one-by-one prompts in {', '.join(bad)}")
    return results


if __name__ == "__main__":
    main()
