"""Old module paths (before the subpackage layout) kept importable for one release, with a warning.

``import simulator.sweep`` still works and returns ``simulator.search.sweep`` itself (the same module
object, so monkeypatching and private names behave as before). The list is the deprecation note in
docs/architecture.md; it goes in the next release.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "simulator.config": "simulator.core.config",
    "simulator.workload": "simulator.core.workload",
    "simulator.costs": "simulator.core.costs",
    "simulator.layer_costs": "simulator.core.layer_costs",
    "simulator.timeline": "simulator.core.timeline",
    "simulator.energy_accounting": "simulator.energy.accounting",
    "simulator.power_trace": "simulator.energy.power_trace",
    "simulator.dvfs": "simulator.search.dvfs",
    "simulator.pricing": "simulator.energy.pricing",
    "simulator.carbon": "simulator.energy.carbon",
    "simulator.pareto": "simulator.search.pareto",
    "simulator.sweep": "simulator.search.sweep",
    "simulator.plansearch": "simulator.search.plan",
    "simulator.plan_serve": "simulator.search.plan_serve",
    "simulator.claims": "simulator.validation.claims",
    "simulator.textfmt": "simulator.cli.textfmt",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path to the module at its new place."""

    def find_spec(self, fullname, path, target=None):  # noqa: D102 - importlib protocol
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):  # noqa: D102 - importlib protocol
        return None

    def exec_module(self, module):  # noqa: D102 - importlib protocol
        new = MOVED[module.__name__]
        warnings.warn(
            f"{module.__name__} moved to {new}; the old path will be removed in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        sys.modules[module.__name__] = importlib.import_module(new)


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
