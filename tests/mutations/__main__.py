"""``python -m tests.mutations [--only ID ...] [--jobs N] [--out FILE] [--timeout S]``: run the mutation catalogue.

The tree is copied once per job (tracked and untracked, not ignored, files) to a temporary folder; each
mutation is applied in one of them, its tests run with that copy first on ``PYTHONPATH``, and the file is put
back. Results go to ``experiments/mutations.json`` (the last result of each mutation, so ``--only``
updates some rows) and the table ``experiments/mutations.md``. A mutation is *caught* when its tests fail, *survived* when they pass, *stale* when its snippet
is no longer in the file (the code moved on: refresh the catalogue), *error* when pytest could not
run the tests at all. Before the mutations, every test selection runs once on the unmutated copy:
a selection that fails there would "catch" anything, so its mutations are reported as *error*.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.mutations.catalogue import MUTATIONS, Mutation

REPO = Path(__file__).resolve().parents[2]
STATUSES = ("caught", "survived", "stale", "error")


@dataclass
class Outcome:
    mutation: Mutation
    status: str  # caught | survived | stale | error
    seconds: float
    detail: str = ""


def copy_tree(dst: Path) -> None:
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file() and not src.is_symlink():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float, threads: int) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    env["OMP_NUM_THREADS"] = str(threads)  # the jobs share the cores instead of each claiming all
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    lines = [x for x in (proc.stdout + proc.stderr).splitlines() if x.strip()]
    return proc.returncode, lines[-1] if lines else ""


def apply(tree: Path, mutation: Mutation) -> str | None:
    """Apply in place; return the original text to restore, or None when a snippet is missing."""
    path = tree / mutation.file
    original = path.read_text()
    text = original
    for old, new in mutation.edits:
        if text.count(old) != 1:
            return None
        text = text.replace(old, new)
    path.write_text(text)
    return original


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="mutation ids to run (default: all)")
    parser.add_argument("--out", default=str(REPO / "experiments" / "mutations.md"))
    parser.add_argument("--timeout", type=float, default=600, help="seconds per pytest run")
    parser.add_argument("--jobs", type=int, default=1, help="mutations tested at once, each in its own copy")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.id in args.only]
    jobs = max(1, args.jobs)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="coz-mutate-") as tmp:
        trees: queue.Queue[Path] = queue.Queue()
        for i in range(jobs):
            (Path(tmp) / str(i)).mkdir()
            copy_tree(Path(tmp) / str(i))
            trees.put(Path(tmp) / str(i))

        def in_a_tree(work, *args):
            tree = trees.get()
            try:
                return work(tree, *args)
            finally:
                trees.put(tree)

        def check_baseline(tree: Path, selection: tuple[str, ...]) -> tuple[int, str]:
            result = run_tests(tree, selection, args.timeout, threads)
            print(f"baseline {' '.join(selection)}: {result[1]}", flush=True)
            return result

        with ThreadPoolExecutor(jobs) as pool:
            selections = list(dict.fromkeys(m.tests for m in chosen))
            baseline = dict(
                zip(selections, pool.map(lambda s: in_a_tree(check_baseline, s), selections), strict=True)
            )

            def check(tree: Path, m: Mutation) -> Outcome:
                start = time.perf_counter()
                code, last = baseline[m.tests]
                if code != 0:
                    o = Outcome(m, "error", 0.0, f"fails unmutated: {last}")
                else:
                    original = apply(tree, m)
                    if original is None:
                        o = Outcome(m, "stale", 0.0, "snippet not found exactly once")
                    else:
                        try:
                            code, last = run_tests(tree, m.tests, args.timeout, threads)
                        finally:
                            (tree / m.file).write_text(original)
                        status = {0: "survived", 1: "caught", -1: "caught"}.get(code, "error")
                        o = Outcome(m, status, time.perf_counter() - start, last)
                print(f"{o.status:8s} {m.id:32s} {o.seconds:6.1f} s  {o.detail}", flush=True)
                return o

            outcomes = list(pool.map(lambda m: in_a_tree(check, m), chosen))
    results = merge_results(Path(args.out).with_suffix(".json"), outcomes)
    write_report(Path(args.out), results)
    print(f"{len(outcomes)} mutations in {(time.perf_counter() - started) / 60:.1f} min")
    caught = sum(o.status == "caught" for o in outcomes)
    judged = sum(o.status in ("caught", "survived") for o in outcomes)
    print(f"{caught}/{judged} caught ({len(outcomes) - judged} stale or error); report: {args.out}")
    return 0 if judged and caught == judged else 1


def merge_results(path: Path, outcomes: list[Outcome]) -> dict[str, dict]:
    """The last result of every mutation in the catalogue: earlier runs' (``path``), updated by this
    run's; a mutation that has left the catalogue is dropped."""
    results = json.loads(path.read_text()) if path.is_file() else {}
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for o in outcomes:
        results[o.mutation.id] = {
            "status": o.status,
            "seconds": round(o.seconds, 1),
            "detail": o.detail,
            "run": stamp,
        }
    ids = [m.id for m in MUTATIONS]
    return {i: results[i] for i in ids if i in results}


def write_report(path: Path, results: dict[str, dict]) -> None:
    counts = {s: sum(r["status"] == s for r in results.values()) for s in STATUSES}
    judged = counts["caught"] + counts["survived"]
    share = f"{100 * counts['caught'] / judged:.0f}%" if judged else "n/a"
    runs = sorted({r["run"] for r in results.values()})
    never = [m.id for m in MUTATIONS if m.id not in results]
    lines = [
        "# Mutation check (`make mutate`)",
        "",
        f"{len(MUTATIONS)} mutations in `tests/mutations/catalogue.py`, each breaking one promise of the "
        "README; the runner (`python -m tests.mutations`, `--only ID ...` for some) applies each to a copy "
        "of the tree and runs only the tests listed for it. Each row is the mutation's last result "
        f"(runs: {', '.join(runs) or 'none'}).",
        "",
        f"**Caught {counts['caught']} of {judged} ({share})**; survived {counts['survived']}, "
        f"stale {counts['stale']}, error {counts['error']}, not run {len(never)}.",
        "",
        "| id | file | promise broken | tests | result | s |",
        "|---|---|---|---|---|---|",
    ]
    for m in MUTATIONS:
        r = results.get(m.id, {"status": "not run", "seconds": 0})
        tests = "<br>".join(f"`{t}`" for t in m.tests)
        result = r["status"] if r["status"] == "caught" else f"**{r['status']}**"
        lines.append(f"| {m.id} | `{m.file}` | {m.promise} | {tests} | {result} | {r['seconds']:.0f} |")
    notes = [(m, results[m.id]) for m in MUTATIONS if m.id in results and results[m.id]["status"] != "caught"]
    if notes:
        lines += ["", "## Not caught", ""]
        lines += [f"- `{m.id}` ({r['status']}): {m.survivor_note or r['detail']}" for m, r in notes]
    notes_file = Path(__file__).with_name("NOTES.md")  # hand-written history, kept across runs
    if notes_file.is_file():
        lines += ["", notes_file.read_text().strip()]
    for target, text in (
        (path, "\n".join(lines) + "\n"),
        (path.with_suffix(".json"), json.dumps(results, indent=1)),
    ):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)


if __name__ == "__main__":
    sys.exit(main())
