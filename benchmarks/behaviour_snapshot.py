"""Snapshot every number the CLI prints for the published tables, the claims, the defaults and the
benchmark scenarios, and compare two snapshots (e.g. before and after a refactor).

Run from any checkout (the CLI is the stable interface, so old and new layouts compare):

    python benchmarks/behaviour_snapshot.py --checkout /path/to/old --out before.json
    python benchmarks/behaviour_snapshot.py --out after.json --compare before.json

Exit status 1 when a number differs by more than --rtol (default 1e-9) or a key is missing.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

#: the benchmark scenarios (benchmarks/bench_training.py), as configs the CLI reads
BENCH_TRAIN = {
    "gpt3-175b-1024xa100-interleaved": {
        "model": "gpt3-175b",
        "cluster": {"gpu": "a100-sxm4-80gb", "num_gpus": 1024, "node": "dgx-a100"},
        "parallel": {"tp": 8, "pp": 8, "dp": 16, "vpp": 2, "schedule": "interleaved", "sp": True, "zero": 1},
        "training": {"seq_len": 2048, "global_batch": 1024, "micro_batch": 1, "recompute": "selective"},
    },
    "llama3-405b-16384xh100-interleaved": {
        "model": "llama3-405b",
        "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 16384, "node": "dgx-h100"},
        "parallel": {"tp": 8, "pp": 16, "dp": 128, "vpp": 2, "schedule": "interleaved", "sp": True, "zero": 1},
        "training": {"seq_len": 8192, "global_batch": 2048, "micro_batch": 1, "recompute": "none"},
    },
}


def _cli(checkout: Path, *args: str) -> object:
    out = subprocess.run(
        [sys.executable, "-m", "simulator", *args, "--json"], cwd=checkout, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def snapshot(checkout: Path) -> dict[str, object]:
    """Every compared output, keyed by what produced it."""
    snap: dict[str, object] = {
        "validate training": _cli(checkout, "validate", "training", "--all"),
        "validate energy": _cli(checkout, "validate", "energy"),
        "claims": _cli(checkout, "claims"),
        "train (default)": _cli(checkout, "train"),
        "serve (default)": _cli(checkout, "serve"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in BENCH_TRAIN.items():
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            snap[f"train {name}"] = _cli(checkout, "train", str(path))
    return snap


def _numbers(obj: object, prefix: str = "") -> dict[str, object]:
    """Flatten to path -> leaf (numbers, strings, booleans, None)."""
    if isinstance(obj, dict):
        out: dict[str, object] = {}
        for k, v in obj.items():
            out.update(_numbers(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(_numbers(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def compare(before: dict, after: dict, rtol: float) -> list[str]:
    """Differences between two snapshots, one line each."""
    a, b = _numbers(before), _numbers(after)
    diffs = [f"missing after: {k}" for k in a.keys() - b.keys()]
    diffs += [f"new after: {k}" for k in b.keys() - a.keys()]
    for k in sorted(a.keys() & b.keys()):
        x, y = a[k], b[k]
        if isinstance(x, float | int) and isinstance(y, float | int) and not isinstance(x, bool):
            if not math.isclose(x, y, rel_tol=rtol, abs_tol=1e-12):
                diffs.append(f"{k}: {x!r} -> {y!r}")
        elif x != y:
            diffs.append(f"{k}: {x!r} -> {y!r}")
    return diffs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkout", type=Path, default=REPO, help="the checkout to run (default: this one)")
    p.add_argument("--out", type=Path, help="write the snapshot here (JSON)")
    p.add_argument("--compare", type=Path, help="a snapshot to compare with")
    p.add_argument("--rtol", type=float, default=1e-9)
    args = p.parse_args()
    snap = snapshot(args.checkout.resolve())
    if args.out:
        args.out.write_text(json.dumps(snap, indent=1, sort_keys=True))
    if not args.compare:
        return 0
    diffs = compare(json.loads(args.compare.read_text()), snap, args.rtol)
    leaves = len(_numbers(snap))
    print(f"{leaves} values compared, {len(diffs)} differ (rtol {args.rtol:g})")
    for line in diffs[:50]:
        print("  " + line)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
