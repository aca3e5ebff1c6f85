"""``python -m tests.mutations [--only ID ...] [--out FILE] [--timeout S]``: run the mutation catalogue.

The tree is copied once (tracked and untracked, not ignored, files) to a temporary folder; each
mutation is applied there, its tests run with that copy first on ``PYTHONPATH``, and the file is put
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
import shutil
import subprocess
import sys
import tempfile
import time
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


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
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
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.id in args.only]
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="coz-mutate-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        baseline: dict[tuple[str, ...], tuple[int, str]] = {}
        for selection in dict.fromkeys(m.tests for m in chosen):
            baseline[selection] = run_tests(tree, selection, args.timeout)
            print(f"baseline {' '.join(selection)}: {baseline[selection][1]}", flush=True)
        for m in chosen:
            start = time.perf_counter()
            code, last = baseline[m.tests]
            if code != 0:
                outcomes.append(Outcome(m, "error", 0.0, f"fails unmutated: {last}"))
            else:
                original = apply(tree, m)
                if original is None:
                    outcomes.append(Outcome(m, "stale", 0.0, "snippet not found exactly once"))
                else:
                    try:
                        code, last = run_tests(tree, m.tests, args.timeout)
                    finally:
                        (tree / m.file).write_text(original)
                    status = {0: "survived", 1: "caught", -1: "caught"}.get(code, "error")
                    outcomes.append(Outcome(m, status, time.perf_counter() - start, last))
            o = outcomes[-1]
            print(f"{o.status:8s} {m.id:32s} {o.seconds:6.1f} s  {o.detail}", flush=True)
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
