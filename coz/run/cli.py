"""What every coz command-line tool shares: the config folder, the run-folder name, the help
text, and one fix to Hydra's override parsing.

Configs: each tool has its own config root ``conf/<tool>/`` (``tool_config_dir``), holding its
primary config ``<tool>.yaml`` and the groups only it composes (``experiment``, its presets, and e.g.
evaluate's ``method``). The groups several tools compose live once in ``conf/shared/`` (backbone,
prompt, logger, zoom, hydra/help); a tool's ``hydra.searchpath`` names the ones it composes, one
``coz://GROUP`` entry each (``coz.run.shared_configs``). So shell completion, ``--help``
(``conf/shared/hydra/help/coz.yaml``) and overrides offer exactly the tool's own groups. User
configs: ``--config-dir DIR`` adds a folder whose groups extend the tool's (``DIR/backbone/mine.yaml``
is ``backbone=mine``).

The fix: Hydra reads the override value ``null`` as YAML null, so ``prompt=null`` (and the
sweep ``-m prompt=null,dape,vlm``) would deselect the prompt group instead of choosing the
option ``conf/shared/prompt/null.yaml``. The paper calls that mode "null", and users type it, so
before Hydra parses the command line we quote a bare ``null`` in overrides of the config groups
that have a ``null`` option. Nothing else on the command line is touched. In YAML and
``compose`` the same option is also named ``none``.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from coz.run import closed_stdout, exit_codes, schema, shared_configs, sweep
from coz.run.shared_configs import config_dir
from coz.run.tool import Tool

CONFIG_DIR = str(config_dir())  # conf/: the tools' roots conf/<tool>/ and conf/shared/

# Config groups whose option files include null.yaml.
GROUPS_WITH_NULL_OPTION = ("prompt",)

_OVERRIDE = re.compile(r"^(?P<key>[+~]{0,2}(?P<group>[\w.]+))=(?P<value>.*)$", re.S)


def quote_null_choices(args: list[str]) -> list[str]:
    """Rewrite ``prompt=null`` to ``prompt='null'`` and ``prompt=null,dape`` to ``prompt='null',dape``.

    Only simple values and comma-separated sweep lists are rewritten; sweep functions such as
    ``choice(...)`` or ``range(...)`` and quoted values are left to Hydra as typed.
    """
    fixed = []
    for arg in args:
        match = _OVERRIDE.match(arg)
        if match and match["group"] in GROUPS_WITH_NULL_OPTION and "(" not in match["value"]:
            items = match["value"].split(",")
            items = ["'null'" if item.strip() == "null" else item for item in items]
            arg = f"{match['key']}={','.join(items)}"
        fixed.append(arg)
    return fixed


def _unique_run_suffix() -> str:
    # Two runs started in the same second must not share a folder: add 4 random hex digits.
    return secrets.token_hex(2)


def slug(text: str, limit: int = 120) -> str:
    """A folder-name-safe form of an override list: ``prompt='null',zoom=nearest`` ->
    ``prompt=null,zoom=nearest``."""
    return re.sub(r"[^\w.,=+-]", "_", text.replace("'", "").replace('"', ""))[:limit] or "default"


if not OmegaConf.has_resolver("coz_slug"):
    OmegaConf.register_new_resolver("coz_slug", slug)


def tool_config_dir(tool: str) -> str:
    """``conf/<tool>``: the config root of one tool (``zoom``, ``evaluate``, ``train_sr``,
    ``train_grpo``, ``app``), for ``hydra.main`` and ``initialize_config_dir``; its primary config
    brings in the shared groups it composes."""
    return str(Path(CONFIG_DIR) / tool)


def shared_group_dir(group: str) -> Path:
    """``conf/shared/<group>``: the options of a group several tools compose."""
    return Path(CONFIG_DIR) / "shared" / group


shared_configs.register()  # the coz://GROUP entries of the tools' hydra.searchpath


def tool_groups_help(tool: str, choices: DictConfig) -> str:
    """``group: option, option, ...`` for each group the tool composes (its ``--help``)."""
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    lines = []
    for group in sorted(g for g in choices if not g.startswith("hydra")):
        options = loader.get_group_options(group, config_name=tool)
        lines.append(f"{group}: {', '.join(sorted(options))}")
    return "\n".join(lines) or "(none)"


if not OmegaConf.has_resolver("coz_groups"):
    OmegaConf.register_new_resolver("coz_groups", tool_groups_help)

# use_cache: the run folder name must resolve to the same value every time Hydra reads it.
if not OmegaConf.has_resolver("coz_uid"):
    OmegaConf.register_new_resolver("coz_uid", _unique_run_suffix, use_cache=True)


# Hydra's flags that take no value: argparse refuses them after an override (`input=x -m backbone=a,b`
# is "unrecognized arguments" and a usage page), so they go first.
FLAGS_WITHOUT_VALUE = ("-m", "--multirun")


def flags_first(args: list[str]) -> list[str]:
    """``input=x -m backbone=a,b`` -> ``-m input=x backbone=a,b``; nothing else moves."""
    flags = [a for a in args if a in FLAGS_WITHOUT_VALUE]
    return flags + [a for a in args if a not in FLAGS_WITHOUT_VALUE]


def forget_hydra_job() -> None:
    """Hydra leaves a command's config set process-wide (``--cfg``, ``--help``, ``--info`` never unset
    it); a later ``run(cfg, run_dir)`` in the same process (the Python API, a notebook, a test) would
    record that command's overrides and group choices as its own (``.hydra/``, run.json)."""
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None


def hydra_entry(
    run: Tool | Callable[[DictConfig], object],
    config_name: str | None = None,
    tool_schema: type | None = None,
) -> Callable[[], None]:
    """Wrap a tool's declaration (:class:`coz.run.tool.Tool`, run by :func:`coz.run.handle.execute`), or
    a plain ``run(cfg)``, as a Hydra command-line entry point reading ``conf/<tool>/<tool>.yaml``
    (``tool`` = ``config_name``; a console script ``coz-<tool>`` and ``python -m coz.<tool>``), with the
    run contract's errors, sweep and exit codes (``coz.run.entry``).

    Tests call ``run(cfg)`` directly with a composed config; users go through this wrapper.
    """
    from coz.run import entry

    if isinstance(run, Tool):
        from coz.run.handle import execute

        tool = run
        config_name, tool_schema = tool.name, tool.schema

        def run(cfg: DictConfig) -> object:
            return execute(tool, cfg)

    jobs = entry.Jobs(config_name)

    @hydra.main(config_path=tool_config_dir(config_name), config_name=config_name, version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.get().verbose:  # hydra.verbose=true shows third-party notes too
            from coz.run.quiet import quiet_third_party

            quiet_third_party()
        entry.run_job(run, cfg, jobs)

    def main() -> None:
        jobs.count, jobs.failed = 0, []  # this command's jobs only (main may run twice in one process)
        sweep.finished, sweep.made_dir = None, None  # and not an earlier command's sweep
        args = flags_first(quote_null_choices(sys.argv[1:]))
        if problem := entry.unparsable_argument(args):
            print(f"error: {problem}", file=sys.stderr)
            sys.exit(2)
        sys.argv = [sys.argv[0], *args]
        closed_stdout.guard()  # before Hydra points its log handler at sys.stdout
        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's own errors reach us: one line each, below
        try:
            _main()
        except (HydraException, OmegaConfBaseException) as err:  # unknown key or option, bad override
            line = (
                schema.describe(err)
                or schema.unknown_override(err, tool_schema)
                or schema.unknown_option(err)
                or entry.one_line(str(err))
            )
            entry.remove_refused_sweep(config_name)
            print(f"error: {line}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:  # Ctrl-C: every finished unit is on disk, a rerun resumes
            print(f"coz.{config_name}: interrupted, rerun to resume", file=sys.stderr)
            sys.exit(exit_codes.INTERRUPTED)
        except BrokenPipeError:
            if not closed_stdout.stdout_closed():
                raise
            closed_stdout.exit_quietly()
        except OSError as err:  # Hydra could not make the run folder
            where = f"{err.filename}: cannot make the run folder there ({err.strerror})"
            code, message = entry.classify(err) or (3, where if err.filename else str(err))
            print(f"error: {message}", file=sys.stderr)
            sys.exit(code)
        except Exception as err:
            if not entry.launcher_lost_a_job(err):
                raise
            print(f"error: coz.{config_name}: {entry.lost_job_message(err)}", file=sys.stderr)
            sys.exit(3)
        finally:
            forget_hydra_job()
        code = entry.report(jobs)
        entry.remove_refused_sweep(config_name)
        sys.exit(code)

    return main
