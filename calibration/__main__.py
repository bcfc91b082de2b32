"""``python -m calibration`` runs ``clustersim calibrate`` (the parser comes from calibration.cli)."""

import sys

from calibration.cli import main

sys.exit(main())
