"""`clustersim calibrate`: measure -> fit -> write profile -> validate, resumable.

The raw measurements go to ``<profile>.raw.json`` next to the profile; an interrupted run keeps
them, and the same command resumes where it stopped. ``clustersim fit RAW.json`` re-fits without a GPU.
The commands and ``python -m calibration`` are in :mod:`calibration.cli`, which calls this module (never the
other way round).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from hwmodels.errors import ClusterSimError
from hwmodels.profile import write_profile


def raw_path_for(out: Path) -> Path:
    """Where the raw measurements of profile ``out`` go: ``<profile>.raw.json`` beside it."""
    return out.with_name(out.stem + ".raw.json")


def _progress(stream: TextIO):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency; plain iteration otherwise
        return None

    def wrap(items, desc: str, total: int):
        return tqdm(items, desc=desc, total=total, file=stream, unit="kernel")

    return wrap


def calibrate(device: str, out: Path, quick: bool = True, gpu: str | None = None, stream: TextIO = sys.stderr) -> int:
    """Run the whole calibration; returns the process exit status."""
    try:
        import torch
    except ImportError:
        raise ClusterSimError("calibration needs PyTorch: pip install 'clustersim[calibrate]'") from None
    from calibration.measure import Measurer

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ClusterSimError("no CUDA GPU is visible; run on a GPU machine, or `clustersim fit RAW.json` to re-fit")
    raw_path = raw_path_for(out)
    measurer = Measurer(device, raw_path, quick=quick)
    try:
        raw = measurer.run(_progress(stream))
    except KeyboardInterrupt:
        measurer.save()
        print(f"\ninterrupted: measurements so far are in {raw_path}; run the same command to resume", file=stream)
        return 130
    return fit_and_write(raw, out, gpu, device, stream)


def fit_and_write(raw: dict, out: Path, gpu: str | None, device: str | None, stream: TextIO) -> int:
    """Fit a profile to ``raw``, write it to ``out`` and report the held-out errors on ``stream``; with a
    ``device``, also validate it on a small transformer there. Returns the exit status."""
    from calibration.fit import fit_profile, format_errors

    cpu = raw.get("meta", {}).get("name") == "cpu"
    if cpu and device is None:
        raise ClusterSimError(
            "these measurements are CPU timings (a smoke run); a GPU profile is only fitted from a GPU's measurements"
        )
    if cpu and gpu is None:
        raise ClusterSimError("these measurements come from a CPU; pass --gpu to name the GPU whose fit to exercise")
    profile, errors = fit_profile(raw, gpu)
    if cpu:  # the smoke run exercises every step but never leaves a GPU profile made of CPU timings
        print(f"smoke run on the CPU: {profile.gpu} curves fitted to CPU timings, no profile written", file=stream)
    else:
        write_profile(profile, out)
        print(f"wrote {out} ({profile.kind} profile for {profile.gpu})", file=stream)
    print("held-out error of the fitted models (a fifth of the points, not used in the fit):", file=stream)
    print(format_errors(errors), file=stream)
    if device is not None:
        from calibration.validate import Shape, measure, predict

        shape = Shape.tiny() if device == "cpu" else Shape()
        measured, predicted = measure(shape, device), predict(shape, profile)
        print("\nvalidation on a small transformer (random weights):", file=stream)
        for key, value in measured.items():
            err = (predicted[key] - value) / value
            print(
                f"  {key:14s} measured {value * 1e3:9.3f} ms  predicted {predicted[key] * 1e3:9.3f} ms  {err:+.1%}",
                file=stream,
            )
    return 0
