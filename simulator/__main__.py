"""``python -m simulator`` runs the clustersim CLI."""

import sys

from simulator.cli.commands import main

sys.exit(main())
