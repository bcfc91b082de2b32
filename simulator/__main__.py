"""``python -m simulator`` runs the clustersim CLI."""

import sys

from simulator.cli import main

sys.exit(main())
