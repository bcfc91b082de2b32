"""`clustersim calibrate`: measure -> fit -> write profile -> report, resumable.

The raw measurements go to ``<profile>.raw.json`` next to the profile; an interrupted run keeps
them, and the same command resumes where it stopped. ``clustersim fit RAW.json`` re-fits without a GPU.
The commands and ``python -m calibration`` are in :mod:`calibration.cli`, which calls this module (never the
other way round).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from hwmodels.errors import ClusterSimError
from hwmodels.profile import Profile, write_profile

if TYPE_CHECKING:
    from calibration.validate import Shape
    from simulator.models import ModelSpec


#: The catalogue GPU whose fit a CPU smoke run exercises when no --gpu is given (its peaks scale the curves).
CPU_SMOKE_GPU = "h100-sxm5-80gb"


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


def model_spec(value: str) -> ModelSpec:
    """A model spec from a preset name, a model file, or a run config YAML (its ``model:``)."""
    from simulator.models import get_model

    path = Path(value)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        from simulator.core.config import read_yaml

        data = read_yaml(path)
        if isinstance(data, dict) and "model" in data:
            return get_model(data["model"])
    return get_model(value)


def e2e_shape(device: str, model: str | None) -> Shape:
    """The end-to-end model to time: ``model`` scaled to the device, else the default validation shape."""
    from calibration.validate import Shape

    if model:
        return Shape.for_model(model_spec(model), device)
    return Shape.tiny() if device == "cpu" else Shape()


def calibrate(
    device: str,
    out: Path,
    quick: bool = True,
    gpu: str | None = None,
    stream: TextIO | None = None,
    model: str | None = None,
) -> int:
    """Run the whole calibration (report on ``stream``, default stderr); returns the process exit status."""
    stream = stream or sys.stderr  # looked up per call: a default bound at import would miss redirection
    try:
        import torch
    except ImportError:
        raise ClusterSimError("calibration needs PyTorch: pip install 'clustersim[calibrate]'") from None
    from calibration.measure import Measurer

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ClusterSimError("no CUDA GPU is visible; run on a GPU machine, or `clustersim fit RAW.json` to re-fit")
    raw_path = raw_path_for(out)
    measurer = Measurer(device, raw_path, quick=quick, e2e_shape=e2e_shape(device, model))
    try:
        raw = measurer.run(_progress(stream))
    except KeyboardInterrupt:
        measurer.save()
        print(f"\ninterrupted: measurements so far are in {raw_path}; run the same command to resume", file=stream)
        return 130
    return fit_and_write(raw, out, gpu, device, stream)


def fit_and_write(raw: dict, out: Path, gpu: str | None, device: str | None, stream: TextIO) -> int:
    """Fit a profile to ``raw``, write it to ``out`` (never from CPU timings) and print the report on ``stream``.

    ``device`` is where the measurements were just taken (``calibrate``), None when re-fitting a file.
    Returns the exit status.
    """
    from calibration.fit import fit_profile, format_errors

    cpu = raw.get("meta", {}).get("name") == "cpu"
    if cpu and device is None:
        raise ClusterSimError(
            "these measurements are CPU timings (a smoke run); a GPU profile is only fitted from a GPU's measurements"
        )
    if cpu and gpu is None:
        gpu = CPU_SMOKE_GPU  # any catalogue GPU: the fit needs its peaks, and nothing is written
    profile, errors = fit_profile(raw, gpu)
    if cpu:  # the smoke run exercises every step but never leaves a GPU profile made of CPU timings
        print(
            f"CPU smoke run: no profile written ({profile.gpu}'s curves fitted to CPU timings only to exercise "
            "the pipeline; the numbers below are the smoke result, not a GPU's)",
            file=stream,
        )
    else:
        write_profile(profile, out)
        print(f"wrote {out} ({profile.kind} profile for {profile.gpu})", file=stream)
    print("held-out error of the fitted models (a fifth of the points, not used in the fit):", file=stream)
    print(format_errors(errors), file=stream)
    print_report(raw, profile, stream)
    return 0


def print_report(raw: dict, profile: Profile, stream: TextIO) -> None:
    """The rest of the report: spread, alignment classes, memory-bound ops, host cost, end-to-end steps."""
    from calibration import report
    from calibration.validate import compare

    print("\nmeasurement spread (IQR / median of the repeats; fits use the medians):", file=stream)
    print(report.spread_table(raw), file=stream)
    print("\nGEMM alignment classes (compute efficiency vs the 16-byte-aligned neighbour):", file=stream)
    print(report.alignment_table(raw, profile), file=stream)
    print("\nmemory-bound ops, read+write bandwidth / HBM peak by input size:", file=stream)
    print(report.membound_table(raw, profile), file=stream)
    print("\n" + report.host_line(raw), file=stream)
    print("\nvalidation on a small transformer (random weights), end-to-end steps:", file=stream)
    print(report.e2e_table(compare(raw.get("e2e", []), profile)), file=stream)
