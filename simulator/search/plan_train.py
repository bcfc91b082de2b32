"""Deprecated: the training plan search is the package :mod:`simulator.search.plan` now.

``from simulator.search.plan_train import ...`` keeps working, with a DeprecationWarning, for one release:
import from ``simulator.search.plan`` instead.
"""

from __future__ import annotations

import warnings

from simulator.search.plan import *  # noqa: F403 - the re-export is the point of this module
from simulator.search.plan import __all__ as __all__

warnings.warn(
    "simulator.search.plan_train moved to simulator.search.plan; the old path will be removed in the next release",
    DeprecationWarning,
    stacklevel=2,
)
