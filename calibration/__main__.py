"""``python -m calibration`` runs ``clustersim calibrate``."""

import sys

from calibration.run import main

sys.exit(main())
