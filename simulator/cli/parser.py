"""The ``clustersim`` parser, assembled from the command groups, and the entry point.

Each command group is a module with ``register(subparsers)`` that adds its subcommands, each with a
``func`` default (its handler: parsed arguments in, exit status out). Adding a group means adding a
module and one entry in :data:`COMMAND_GROUPS`; the tuple's order is the order of ``--help``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

import calibration.cli as calibration_cli
import simulator.cli.app as app
import simulator.cli.catalogue as catalogue
import simulator.cli.run as run
import simulator.cli.search as search
import simulator.cli.trace as trace
import simulator.cli.validate as validate
from calibration.cli import EXIT_INTERRUPTED
from simulator.cli.common import add_yes_arg, with_scale_check

__all__ = ["COMMAND_GROUPS", "EXIT_INTERRUPTED", "build_parser", "main"]


#: Modules with ``register(subparsers)``: gpus models nodes costs example | train serve dvfs | calibrate fit |
#: claims validate | sweep plan | app.
COMMAND_GROUPS: tuple[ModuleType, ...] = (catalogue, run, calibration_cli, validate, search, trace, app)


def build_parser() -> argparse.ArgumentParser:
    """The full ``clustersim`` parser: every command group's subcommands."""
    parser = argparse.ArgumentParser(
        prog="clustersim",
        description="Simulate and cost large-model training and inference on GPU clusters.",
    )
    add_yes_arg(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for bad input, with a one-line message; 130 on Ctrl-C).

    ``train``, ``serve`` and ``dvfs`` first check their config's scale (:func:`~simulator.cli.common.check_scale`).
    """
    return calibration_cli.run_parsed(with_scale_check(build_parser().parse_args(argv)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
