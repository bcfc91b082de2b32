"""The architecture, checked: no import cycles, layers import only downward, heavy libraries stay lazy,
and the installed package list matches the folders.

The import graph is read from the source by AST, function-level imports included, so a lazy import
that closes a cycle is still a cycle. ``app/`` is the ``simulator.app`` package once installed.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
#: import package -> folder (the app folder installs as simulator.app)
ROOTS = {"hwmodels": "hwmodels", "simulator": "simulator", "simulator.app": "app", "calibration": "calibration"}

#: Layers, lowest first; a module belongs to the longest prefix listed. A module may import its own
#: package (the prefix it matched) or any strictly lower layer, never a higher or a same-layer sibling.
LAYERS: list[tuple[str, ...]] = [
    ("hwmodels",),
    # bundled data, GPU facts, the caps on untrusted input
    ("simulator._compat", "simulator.core.resources", "simulator.core.device_memory", "simulator.core.limits"),
    ("simulator.core.untrusted",),  # reading untrusted files, YAML and JSON; confining paths
    # leaf specs and registries the run configs validate against
    (
        "simulator.models",
        "simulator.stacks",
        "simulator.moe",
        "simulator.energy",
        "simulator.training.schedules",
        "simulator.serving.policies",
    ),
    ("simulator.core.workload",),  # a layer and a parallel plan -> ops
    ("simulator.core.costs",),  # ops -> seconds: the one place ops meet the hardware models
    ("simulator.compression",),  # the config's compression spec, priced through costs
    ("simulator.core",),  # config -> workload -> costs -> layer costs, timeline
    ("simulator.trace",),  # a PyTorch model's kernels as ops (torch imported only to trace)
    ("simulator.training", "simulator.serving"),  # the engines
    ("simulator.search",),  # sweeps, plan search, DVFS sweeps, deployment search
    ("simulator.validation", "calibration"),  # published tables and claims; measuring and fitting
    ("simulator.cli", "simulator.app", "simulator"),  # user interfaces and the public facade
]
HEAVY = ("torch", "streamlit", "plotly", "pandas", "ray")
#: modules allowed to import a heavy library at import time: the user interfaces
HEAVY_OK = ("simulator.app", "simulator.cli", "calibration")


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg, folder in ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([pkg, *parts])] = path
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(mod: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported project module, line, at module level) for every import in ``mod``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    typing_only = _type_checking_nodes(tree)
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target and target != mod and (name == names[0] or target == name):
                out.append((target, node.lineno, id(node) in top))
    return out


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """Nodes under ``if TYPE_CHECKING:`` (annotations only, never imported at run time)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


GRAPH = {mod: _imports(mod, path) for mod, path in MODULES.items()}


def _layer(mod: str) -> tuple[int, str]:
    best = (-1, "")
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (mod == prefix or mod.startswith(prefix + ".")) and len(prefix) > len(best[1]):
                best = (level, prefix)
    assert best[0] >= 0, f"{mod} is in no layer: add it to LAYERS"
    return best


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w, _, _ in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_packages() -> None:
    assert {"simulator.core.config", "simulator.training.engine", "simulator.app.main", "hwmodels.profile"} <= set(
        MODULES
    )
    assert any(t == "simulator.core.config" for t, _, _ in GRAPH["simulator.training.simulate"])


def test_no_import_cycles_function_level_imports_included() -> None:
    assert _cycles() == []


def test_layers_import_only_downward() -> None:
    bad = []
    for mod, targets in GRAPH.items():
        level, home = _layer(mod)
        for target, line, _ in targets:
            t_level, t_home = _layer(target)
            if t_home == home or t_level < level:
                continue
            if home == "simulator" and mod in ("simulator", "simulator.__main__"):
                continue  # the facade re-exports the engines' public API
            bad.append(f"{MODULES[mod].relative_to(REPO)}:{line} {mod} -> {target}")
    assert bad == [], "\n".join(bad)


def test_model_layers_do_not_import_heavy_libraries_at_import_time() -> None:
    bad = []
    for mod, path in MODULES.items():
        if mod.startswith(HEAVY_OK):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            bad += [f"{mod}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in HEAVY]
    assert bad == [], "\n".join(bad)


def test_importing_the_model_packages_loads_no_heavy_library() -> None:
    import subprocess

    code = (
        "import sys, hwmodels, simulator, simulator.serving, simulator.training.simulate; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_pyproject_lists_every_package_folder() -> None:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    assert listed == found
    assert cfg["package-dir"] == {"simulator.app": "app"}
    assert {p.split(".")[0] for p in listed} == {"simulator", "hwmodels", "calibration"}


@pytest.mark.parametrize("mod", ["simulator.core.config", "simulator.search.sweep", "simulator.energy.carbon"])
def test_no_module_reaches_the_cli(mod: str) -> None:
    assert not [t for t, _, _ in GRAPH[mod] if t.startswith(("simulator.cli", "simulator.app"))]


#: modules that may print: the command line (everything else logs or returns text)
PRINT_OK = ("simulator.cli", "calibration.cli", "calibration.run", "calibration.record_routing")


def test_only_command_line_modules_print() -> None:
    bad = []
    for mod, path in MODULES.items():
        if mod.startswith(PRINT_OK):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert bad == [], "\n".join(bad)


def test_one_atomic_write() -> None:
    """Temp-file-then-rename lives in hwmodels.fileio only."""
    users = [m for m, p in MODULES.items() if "os.replace(" in p.read_text(encoding="utf-8")]
    assert users == ["hwmodels.fileio"]


# ---- ops meet the hardware models only in simulator.core.costs ---------------------------------------

#: Profile kernel timings (and the curve internals behind them) that only simulator.core.costs may call.
KERNEL_TIMINGS = frozenset(
    {"gemm_time", "attention_prefill_time", "attention_decode_time", "memory_op_time", "kernel_time", "_time", "curve"}
)
COLLECTIVES = "hwmodels.collectives"
COSTS = "simulator.core.costs"
#: module -> (the names above it may use, why). Peaks (``peak_flops``, ``bandwidth_bytes_s``) are not
#: timings and stay free to use as utilisation denominators (MFU in layer_costs and training.simulate,
#: the serving energy work in serving.iteration); energy and power modules call none of the above.
HARDWARE_OK: dict[str, tuple[frozenset[str], str]] = {
    COSTS: (KERNEL_TIMINGS | {COLLECTIVES}, "the one place where ops meet the hardware models"),
    "simulator.core.config": (
        frozenset({COLLECTIVES}),
        "checks parallel.collective_algorithm against the algorithm registry (names, node features; no timing)",
    ),
    "simulator.app.charts": (
        frozenset({"gemm_time"}),
        "plots the profile's own GEMM efficiency curve against calibration measurements",
    ),
    "simulator.app.plans": (
        frozenset({"gemm_time"}),
        "scores the profile's own GEMM prediction against calibration measurements",
    ),
}


def _costs_aliases(tree: ast.AST) -> set[str]:
    """Expressions that name the costs module in this file (``costs``, ``C``, ``simulator.core.costs``)."""
    names = {COSTS}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "simulator.core":
            names |= {a.asname or a.name for a in node.names if a.name == "costs"}
        elif isinstance(node, ast.Import):
            names |= {a.asname for a in node.names if a.name == COSTS and a.asname}
    return names


def _hardware_uses(source: str) -> list[tuple[int, str]]:
    """(line, name) for each kernel-timing attribute call and each import of hwmodels.collectives."""
    tree = ast.parse(source)
    typing_only = _type_checking_nodes(tree)
    via_costs = _costs_aliases(tree)
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in KERNEL_TIMINGS:
            if ast.unparse(node.func.value) not in via_costs:
                out.append((node.lineno, node.func.attr))
        elif isinstance(node, ast.ImportFrom) and not node.level:
            mods = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            if COLLECTIVES in mods:
                out.append((node.lineno, COLLECTIVES))
        elif isinstance(node, ast.Import) and any(a.name == COLLECTIVES for a in node.names):
            out.append((node.lineno, COLLECTIVES))
    return sorted(out)


def test_the_hardware_check_sees_calls_and_imports() -> None:
    src = """
from hwmodels import collectives
from hwmodels.collectives import all_reduce_time
import hwmodels.collectives as hc
from simulator.core import costs
from simulator.core.costs import gemm_time
def f(profile, im):
    profile.gemm_time(1, 1, 1)
    im.profile._time(c, 1.0, 1.0, "bf16", True)
    profile.curve("gemm").floor_s
    costs.gemm_time(profile, 1, 1, 1)
    gemm_time(profile, 1, 1, 1)
    profile.peak_flops("bf16")
"""
    imports = [(line, COLLECTIVES) for line in (2, 3, 4)]
    assert _hardware_uses(src) == [*imports, (8, "gemm_time"), (9, "_time"), (10, "curve")]


def test_only_costs_calls_the_kernel_timings_and_collectives() -> None:
    """Every module of the simulator (the app included) prices kernels and collectives through
    simulator.core.costs; the allow-list names the few that may not, and why."""
    bad = []
    for mod, path in MODULES.items():
        if not mod.startswith("simulator"):
            continue
        allowed = HARDWARE_OK.get(mod, (frozenset(), ""))[0]
        bad += [
            f"{path.relative_to(REPO)}:{line} {name}"
            for line, name in _hardware_uses(path.read_text(encoding="utf-8"))
            if name not in allowed
        ]
    assert bad == [], "use simulator.core.costs instead:\n" + "\n".join(bad)
    assert set(HARDWARE_OK) <= set(MODULES), "the allow-list names a module that no longer exists"
