"""``python -m coz.study build|serve|report [overrides]`` (or ``coz-study``): the paper's MOS user study.

The first argument chooses the command (it becomes the override ``command=``); every option is a
Hydra override of ``conf/study/study.yaml``. ``build`` writes a study folder (Hydra's run folder,
``outputs/study/<date>/<time>-<id>/`` unless ``hydra.run.dir=``), ``serve`` and ``report`` read one
(``study=``) and write no run folder of their own.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from coz.errors import CozError
from coz.run.cli import hydra_entry
from coz.run.schema import typed
from coz.study.schema import COMMANDS, StudyTool

log = logging.getLogger("coz.study")

_LIST_KEYS = ("from", "questions")  # lists: from=a,b means [a,b] (not a sweep), from=a means [a]


def run(cfg: DictConfig) -> Any:
    cfg = typed(StudyTool, cfg)  # every key and value, before anything is read or written
    commands = {"build": build_command, "serve": serve_command, "report": report_command}
    return commands[cfg.command](cfg)


def build_command(cfg: DictConfig, study_dir: Path | None = None) -> dict:
    from coz.run.folder import claim, record_attempt
    from coz.study.build import build, check

    study_dir = Path(study_dir or _hydra_run_dir())
    opts, runs = check(cfg, study_dir)  # before the folder is claimed: a bad option leaves nothing behind
    with claim(study_dir, "study"):
        manifest = build(cfg, study_dir, opts, runs)
        record_attempt(study_dir, cfg)
    print(
        f"coz.study: study in {study_dir}\ncoz.study: serve it with  python -m coz.study serve 'study=\"{study_dir}\"'"
    )
    return manifest


def open_study(cfg: DictConfig):
    """(manifest, vote store) of ``study=``."""
    from coz.study.manifest import load_manifest
    from coz.study.votes import VoteStore, default_url

    if cfg.study in (None, ""):
        raise CozError("study= is missing: give the folder that python -m coz.study build wrote")
    manifest = load_manifest(cfg.study)
    url = cfg.db if cfg.db not in (None, "") else default_url(manifest["folder"])
    return manifest, VoteStore(url, manifest["sha256"])


def serve_command(cfg: DictConfig) -> int:
    """Serve until interrupted (Ctrl-C, SIGTERM)."""
    from coz.study.server import StudyApp, make_server

    port = cfg.port
    instructions = OmegaConf.to_container(cfg.instructions, resolve=True)
    manifest, store = open_study(cfg)
    app = StudyApp(manifest, store, instructions, cfg.access_code)
    try:
        server = make_server(app, cfg.host, port)
    except OSError as err:
        raise CozError(
            f"host={cfg.host} port={port}: cannot listen there ({err.strerror or err}); choose another port="
        ) from None
    host, port = server.server_address[:2]
    print(
        f"coz.study: serving {len(manifest['questions'])} questions for {len(manifest['raters'])} rater slots "
        f"at http://{host}:{port}/ (votes: {store.engine.url.render_as_string(hide_password=True)}); Ctrl-C stops",
        flush=True,
    )
    if threading.current_thread() is threading.main_thread():
        signal.signal(
            signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start()
        )
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        store.close()
    return 0


def report_command(cfg: DictConfig) -> dict:
    from coz.study.report import summary, write_report

    manifest, store = open_study(cfg)
    try:
        votes = store.all_votes()
    finally:
        store.close()
    out = Path(manifest["folder"]) / "report"
    result = write_report(manifest, votes, out, cfg.exclude.min_votes, cfg.exclude.constant)
    print(summary(result))
    if result["mos"]:
        files = "report.html, mos.png, mos.csv, ttests.csv"
    elif result["all_votes"]:
        files = "every vote excluded (see above): report.html, empty CSV files"
    else:
        files = "no votes yet: report.html, empty CSV files"
    print(f"coz.study: report in {out}/ ({files})")
    if cfg.wandb:
        log_to_wandb(result, out, OmegaConf.to_container(cfg, resolve=True))
    return result


def log_to_wandb(result: dict, out: Path, config: dict) -> None:
    import wandb

    from coz.run.wandb_run import start_wandb

    run = start_wandb(OmegaConf.create({"project": "coz"}), out, "study", config)
    columns = {
        "mos": ["kind", "method", "mos", "std", "votes", "raters"],
        "ttests": ["kind", "a", "b", "test", "n", "t", "p", "stars"],
    }
    logged = {
        key: wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in result[key]])
        for key, cols in columns.items()
    }
    if (out / "mos.png").exists():
        logged["chart"] = wandb.Image(str(out / "mos.png"))
    run.log(logged)
    for row in result["mos"]:  # one number per method and kind, to compare studies in the runs table
        run.summary[f"{row['kind']}/{row['method']}/mos"] = row["mos"]
    run.finish()


def _hydra_run_dir() -> str:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir


def command_line(args: list[str]) -> list[str] | str:
    """``build from=a,b ...`` -> ``command=build from=[a,b] ...`` (``from=a``: ``from=[a]``); a problem
    as one line."""
    words = [a for a in args if not a.startswith("-") and "=" not in a]
    if (
        any(
            a in ("--help", "-h", "--hydra-help", "--info") or a.startswith("-sc") or a.startswith("--shell")
            for a in args
        )
        and not words
    ):
        return args
    if not words or words[0] not in COMMANDS:
        given = f" (got {words[0]!r})" if words else ""
        return f"choose a command: python -m coz.study build|serve|report [key=value ...]{given}"
    command = words[0]
    rest = list(args)
    rest.remove(command)
    fixed = []
    for arg in rest:
        key, eq, value = arg.partition("=")
        if eq and key in _LIST_KEYS and not value.lstrip().startswith("["):
            arg = f"{key}=[{value}]"
        fixed.append(arg)
    if command != "build" and not any(a.startswith("hydra.run.dir=") for a in fixed):
        fixed.append("hydra.run.dir=.")  # serve and report read a study; they make no run folder
    return [f"command={command}", *fixed]


_hydra_main = hydra_entry(run, config_name="study", tool_schema=StudyTool)


def main() -> None:
    args = command_line(sys.argv[1:])
    if isinstance(args, str):
        print(f"error: {args}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], *args]
    _hydra_main()
