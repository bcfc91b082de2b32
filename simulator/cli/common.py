"""What the command groups share: the exit status for bad input, JSON output, the config arguments, the
scale check.

Every config-driven subcommand has one shape: an optional YAML config path, ``--set key=value``
overrides, ``--profile`` and ``--json`` for machine output. Bad input raises
:class:`hwmodels.errors.ClusterSimError`, which :func:`simulator.cli.parser.main` prints as one line
(exit :data:`EXIT_USAGE`). A config beyond interactive scale (:data:`simulator.core.limits.CLI_CAPS`:
10^9 requests, 10^12 GPUs, ...) stops with a warning unless ``--yes`` is given (:func:`check_scale`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from calibration.cli import EXIT_USAGE  # exit status for bad input (argparse's own), one policy
from hwmodels.errors import ClusterSimError
from simulator.core.limits import CLI_CAPS, WorkCaps
from simulator.core.resources import example_path

__all__ = [
    "DEFAULT_CONFIGS",
    "DEFAULT_SERVE_CONFIG",
    "DEFAULT_TRAIN_CONFIG",
    "EXIT_USAGE",
    "Handler",
    "SCALE_CHECKED",
    "add_config_args",
    "add_json_arg",
    "config_help",
    "add_yes_arg",
    "check_scale",
    "default_config_path",
    "example_path",
    "load_cli_config",
    "number_list",
    "print_json",
    "scale_caps",
    "with_scale_check",
]


#: Bundled example configs that ``train`` and ``serve`` (and the planners) run when no CONFIG is given.
DEFAULT_TRAIN_CONFIG = "gpt3-175b-a100.yaml"
DEFAULT_SERVE_CONFIG = "serve-llama3-8b-h100.yaml"

#: A subcommand's handler: the parsed arguments in, the exit status out.
Handler = Callable[[argparse.Namespace], int]


def default_config_path() -> Path:
    """The bundled config `costs` uses when no CONFIG is given."""
    return example_path("quickstart.yaml")


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON (anything JSON cannot hold as its ``str``)."""
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


def add_json_arg(p: argparse.ArgumentParser, help_: str = "machine-readable output") -> None:
    """The ``--json`` flag."""
    p.add_argument("--json", action="store_true", help=help_)


#: The bundled example each config-driven command runs without a CONFIG, by its last word (``plan serve`` ->
#: ``serve``), with what it is, for ``--help``. Keep in step with the handlers' defaults.
DEFAULT_CONFIGS: dict[str, tuple[str, str]] = {
    "train": (DEFAULT_TRAIN_CONFIG, "GPT-3 175B on 1,024 A100"),
    "serve": (DEFAULT_SERVE_CONFIG, "Llama-3 8B on one H100"),
    "dvfs": ("quickstart.yaml", "Llama-3 8B training on 8 H100"),
    "costs": ("quickstart.yaml", "Llama-3 8B training on 8 H100"),
}


def config_help(prog: str) -> str:
    """The CONFIG argument's help for the command ``prog`` (``clustersim train``): which example it defaults to."""
    name, what = DEFAULT_CONFIGS.get(prog.split()[-1], ("quickstart.yaml", "Llama-3 8B training on 8 H100"))
    return f"YAML config (default: the bundled {name}, {what}; `clustersim example {name}` copies it)"


def add_config_args(p: argparse.ArgumentParser) -> None:
    """CONFIG, ``--set KEY=VALUE`` (repeatable), ``--profile`` and ``--json``."""
    p.add_argument("config", nargs="?", help=config_help(p.prog))
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set parallel.tp=4 (repeatable)",
    )
    p.add_argument(
        "--profile",
        default=None,
        help="hardware profile: a GPU's calibrated profile by default, 'datasheet', or a path",
    )
    add_json_arg(p)
    add_yes_arg(p)


def add_yes_arg(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--yes``: run a config beyond interactive scale (CLI_CAPS) after a warning instead of stopping.

    The top-level parser holds the default (False); a subcommand's copy only sets it when given, so
    ``clustersim --yes serve`` and ``clustersim serve --yes`` both work.
    """
    p.add_argument(
        "--yes",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="run beyond interactive scale (e.g. over 200,000 requests or 1M GPUs) without stopping",
    )


# ---- scale: stop beyond interactive scale unless --yes ---------------------------------------------

#: Commands whose config is checked by :func:`check_scale` before they run -> the config's kind
#: (None: told from the config, as ``dvfs`` takes either).
SCALE_CHECKED: dict[str, Literal["training", "serving"] | None] = {
    "train": "training",
    "serve": "serving",
    "dvfs": None,
}


def scale_caps(args: argparse.Namespace) -> WorkCaps | None:
    """The caps a command runs under: :data:`CLI_CAPS`, or none with ``--yes``."""
    return None if getattr(args, "yes", False) else CLI_CAPS


def load_cli_config(command: str, args: argparse.Namespace) -> tuple[Literal["training", "serving"], Any]:
    """(kind, validated config) of a ``train``/``serve``/``dvfs`` command, loaded as the command loads it."""
    from simulator.core.config import apply_overrides, load_config, read_yaml
    from simulator.search.sweep import config_kind
    from simulator.serving.config import load_serving_config

    kind = SCALE_CHECKED[command]
    if kind is None:
        data = apply_overrides(read_yaml(args.config or example_path("quickstart.yaml")), args.set)
        kind = config_kind(data)
        return kind, load_config(data) if kind == "training" else load_serving_config(data)
    if kind == "training":
        return kind, load_config(args.config or example_path(DEFAULT_TRAIN_CONFIG), args.set)
    return kind, load_serving_config(args.config or example_path(DEFAULT_SERVE_CONFIG), args.set)


def check_scale(kind: Literal["training", "serving"], cfg: Any, args: argparse.Namespace) -> None:
    """Stop with a one-line error (exit 2) when ``cfg`` is beyond :data:`CLI_CAPS`, unless ``--yes``:
    then print the same as a warning and go on."""
    from simulator.search.scale import LABELS, over_caps, work_of

    over = over_caps(work_of(kind, cfg, CLI_CAPS), CLI_CAPS)
    if not over:
        return
    name, value, cap = over[0]
    what = f"{LABELS[name]} = {value:,} is beyond interactive scale ({cap:,})"
    if not getattr(args, "yes", False):
        raise ClusterSimError(f"{what}; this may take very long or exhaust memory: pass --yes to run it anyway")
    print(f"clustersim: warning: {what}; running it anyway (--yes)", file=sys.stderr)


def with_scale_check(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with its handler preceded by :func:`check_scale` for the commands in :data:`SCALE_CHECKED`."""
    command = getattr(args, "command", None)
    if command not in SCALE_CHECKED or not callable(getattr(args, "func", None)):
        return args
    handler: Handler = args.func

    def checked(a: argparse.Namespace) -> int:
        check_scale(*load_cli_config(command, a), a)
        return handler(a)

    args.func = checked
    return args


def number_list(text: str | None, kind: Callable[[str], Any] = float) -> list[Any] | None:
    """``"990,1200"`` as ``[990.0, 1200.0]`` (``kind`` converts each item); None or empty gives None.
    An item that is not a number is a one-line ClusterSimError."""
    if not text:
        return None
    out = []
    for item in text.split(","):
        try:
            out.append(kind(item))
        except (ValueError, OverflowError):
            raise ClusterSimError(f"{item.strip()[:40]!r} in {text[:80]!r} is not a number; e.g. 990,1200") from None
    return out
