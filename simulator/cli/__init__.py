"""The ``clustersim`` command line: the parser and one module per command group (the top layer)."""

from simulator.cli.commands import EXIT_USAGE, build_parser, main

__all__ = ["EXIT_USAGE", "build_parser", "main"]
