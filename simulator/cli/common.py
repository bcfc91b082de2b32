"""What the command groups share: the exit status for bad input, JSON output, the config arguments.

Every config-driven subcommand has one shape: an optional YAML config path, ``--set key=value``
overrides, ``--profile`` and ``--json`` for machine output. Bad input raises
:class:`hwmodels.errors.ClusterSimError`, which :func:`simulator.cli.parser.main` prints as one line
(exit :data:`EXIT_USAGE`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from calibration.cli import EXIT_USAGE  # exit status for bad input (argparse's own), one policy
from simulator.core.resources import example_path

__all__ = [
    "DEFAULT_SERVE_CONFIG",
    "DEFAULT_TRAIN_CONFIG",
    "EXIT_USAGE",
    "Handler",
    "add_config_args",
    "add_json_arg",
    "default_config_path",
    "example_path",
    "number_list",
    "print_json",
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


def add_config_args(p: argparse.ArgumentParser) -> None:
    """CONFIG, ``--set KEY=VALUE`` (repeatable), ``--profile`` and ``--json``."""
    p.add_argument("config", nargs="?", help="YAML config (default: the bundled quickstart example)")
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


def number_list(text: str | None, kind: Callable[[str], Any] = float) -> list[Any] | None:
    """``"990,1200"`` as ``[990.0, 1200.0]`` (``kind`` converts each item); None or empty gives None."""
    return [kind(item) for item in text.split(",")] if text else None
