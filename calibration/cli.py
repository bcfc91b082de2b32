"""``clustersim calibrate`` and ``clustersim fit``: the calibration command group.

:func:`register` adds both to the ``clustersim`` parser (simulator/cli/parser.py lists this module among
its command groups); :func:`main` is ``python -m calibration`` = ``clustersim calibrate``, built from
this module alone so that calibration never imports the simulator's CLI.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hwmodels.errors import ClusterSimError

__all__ = ["cmd_calibrate", "cmd_fit", "main", "register"]

#: Exit status of bad input, as in ``clustersim``.
#: Exit status of a command given bad input (argparse's own, for usage errors).
EXIT_USAGE = 2
#: Exit status after Ctrl-C (128 + SIGINT), as a shell reports it.
EXIT_INTERRUPTED = 130


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``clustersim calibrate``: measure this machine's GPU, fit and write a profile, validate it."""
    from calibration.run import calibrate

    default = "cpu-smoke.json" if args.device == "cpu" else f"{args.gpu or 'gpu'}-profile.json"  # cpu: raw file only
    out = Path(args.out) if args.out else Path(default)
    return calibrate(args.device, out, quick=args.quick, gpu=args.gpu, model=args.model)


def cmd_fit(args: argparse.Namespace) -> int:
    """``clustersim fit RAW.json``: re-fit a profile from raw measurements (no GPU needed)."""
    from calibration.fit import read_raw
    from calibration.run import fit_and_write

    raw = read_raw(args.raw)
    out = Path(args.out) if args.out else Path(args.raw).with_name(Path(args.raw).stem.replace(".raw", "") + ".json")
    return fit_and_write(raw, out, args.gpu, None, sys.stdout)


def register(sub: Any) -> None:
    """Add ``calibrate`` and ``fit`` to the CLI's subcommands."""
    p = sub.add_parser(
        "calibrate",
        help="measure this machine's GPU, fit a profile and report its error",
        description="Measure GEMM (incl. alignment classes), attention, memory-bound and copy kernels (and power, "
        "NCCL) and end-to-end steps of a small model with PyTorch, each point repeated (median, IQR), fit the cost "
        "models, write a profile and report it against the measurements. Resumes if interrupted.",
    )
    p.add_argument("--device", default="cuda:0", help="torch device (cpu only smoke-tests the pipeline)")
    p.add_argument("--quick", action="store_true", help="a smaller grid (under 5 minutes on an H100)")
    p.add_argument("--out", help="profile path (default: GPU-profile.json; raw measurements beside it)")
    p.add_argument("--gpu", help="catalogue id of the GPU (default: from the device name)")
    p.add_argument(
        "--model",
        help="dense model for the end-to-end step: a preset, a model file or a run config YAML "
        "(2 of its layers on a GPU, a tiny copy on the CPU; default: a 4-layer Llama-style validation model)",
    )
    p.set_defaults(func=cmd_calibrate)
    p = sub.add_parser("fit", help="re-fit a profile from a raw measurement file (no GPU needed)")
    p.add_argument("raw", help="raw measurements JSON (written by calibrate)")
    p.add_argument("--out", help="profile path (default: next to the raw file)")
    p.add_argument("--gpu", help="catalogue id of the GPU (default: from the file's meta.name)")
    p.set_defaults(func=cmd_fit)


def run_parsed(args: argparse.Namespace) -> int:
    """Run a parsed command: bad input is one line on stderr and exit 2, Ctrl-C one line and exit 130.

    The one error policy of every ``clustersim`` entry point (``simulator.cli`` uses it too).
    """
    try:
        return args.func(args)
    except ClusterSimError as exc:
        print(f"clustersim: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("clustersim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m calibration [ARGS]`` = ``clustersim calibrate [ARGS]``, with the same one-line errors."""
    parser = argparse.ArgumentParser(prog="clustersim")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return run_parsed(parser.parse_args(["calibrate", *(argv if argv is not None else sys.argv[1:])]))
