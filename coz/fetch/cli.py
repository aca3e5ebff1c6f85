"""The command line of ``coz-fetch``: no name lists the releases; names fetch them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coz.errors import CozError
from coz.fetch.local import weights_root
from coz.fetch.registry import AUTO, RELEASES, release


def describe() -> str:
    lines = [f"Releases (the weights folder: {weights_root()}; `coz-fetch NAME ...` or `all`):"]
    for r in RELEASES:
        pin = "pinned" if r.pinned else "NOT pinned (see coz/fetch/registry.py)"
        options = [f"{o}=auto" for o, (name, _) in AUTO.items() if name == r.name]
        lines.append(f"  {r.name:14} {r.what}")
        lines.append(
            f"  {'':14} {pin}; from {r.source}" + (f"; then {', '.join(options)}" if options else "")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="coz-fetch",
        description="Download and check the released weights, laid out where <option>=auto finds them.",
    )
    parser.add_argument("names", nargs="*", help="releases to fetch (`all` for every one); none: list them")
    parser.add_argument(
        "--dir", type=Path, help="the weights folder (default: $COZ_WEIGHTS or ~/.cache/coz/weights)"
    )
    parser.add_argument("--revision", help="a hub commit to fetch (pins one hub release by hand)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if not args.names:
        print(describe())
        return
    names = [r.name for r in RELEASES] if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in {r.name for r in RELEASES}]
    if unknown:
        known = ", ".join(r.name for r in RELEASES)
        print(f"error: no release named {', '.join(unknown)} (known: {known}, all)", file=sys.stderr)
        sys.exit(2)
    if args.revision and len(names) != 1:
        print("error: --revision pins one hub release: name exactly one", file=sys.stderr)
        sys.exit(2)
    root = (args.dir or weights_root()).expanduser()
    from coz.fetch.download import fetch_release

    for name in names:
        try:
            for line in fetch_release(release(name), root, not args.no_progress, args.revision):
                print(f"{name}: {line}")
        except CozError as err:
            print(f"error: {name}: {err}", file=sys.stderr)
            sys.exit(err.exit_code)
