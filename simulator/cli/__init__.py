"""The ``clustersim`` command line: the parser and one module per command group (the top layer).

:mod:`simulator.cli.parser` assembles the parser from the command groups -- :mod:`~simulator.cli.catalogue`
(gpus, models, nodes, costs, example), :mod:`~simulator.cli.run` (train, serve, dvfs),
:mod:`~simulator.cli.validate` (validate, claims), :mod:`~simulator.cli.search` (sweep, plan),
:mod:`~simulator.cli.app` (app) and :mod:`calibration.cli` (calibrate, fit) -- and runs it with one-line
errors. :mod:`simulator.cli.common` holds what they share; nothing below this package imports it.
"""

from simulator.cli.common import EXIT_USAGE
from simulator.cli.parser import build_parser, main

__all__ = ["EXIT_USAGE", "build_parser", "main"]
