"""Carbon: what a run emits (operational + embodied) and how much moving it in time saves.

Operational carbon is energy x grid intensity. The bundled intensities are *location-based* (the grid average where
the electricity is drawn), the default of the GHG Protocol Scope 2 guidance; its *market-based* method (contracts,
renewable certificates) is available by passing ``market_kg_per_kwh`` or ``renewable_fraction``. Energy here is
facility energy: IT energy times PUE, computed by the caller (see :func:`tdp_energy_mwh`).

Embodied carbon (manufacturing) is amortised linearly over the hardware's service life by the job's GPU-hours.

Carbon-aware scheduling works on an hourly :class:`IntensitySeries`: a job of ``job_hours`` at full rate and
``power_kw`` must finish within ``deadline_h`` hours of ``now``. Policies:

* ``"now"``: run at once, contiguously (the baseline every saving is measured against);
* ``"best-start"``: the contiguous start with the least carbon (exhaustive, exact);
* ``"pause-resume"``: run in any hours. Without a resume overhead the lowest-intensity hours are optimal (fractional
  knapsack); with one, an exact dynamic programme over (hours run, segments) picks the schedule;
* ``"scale-down"``: run from now without pausing, on a fraction of the GPUs in high-carbon hours and all of them in
  low-carbon hours. For each possible finishing hour a greedy fill (cheapest carbon per unit of progress first) is
  optimal because cost per hour is convex in progress when throughput scales as ``gpus**e`` with ``e <= 1``; the best
  finishing hour wins. GPUs not in use are taken to be released (they draw nothing for this job).

Time is the series' hours; a job's work need not be whole hours, so at full rate one hour may be partial: the job
starts late in it or stops early in it (for pause-resume, at the start or end of any run, which costs no extra resume).
Every saving is against ``"now"``, so it is never negative.
"""

from __future__ import annotations

import csv
import difflib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal, overload

import numpy as np
import yaml

from hwmodels.errors import ClusterSimError, UnknownNameError
from simulator.core.limits import MAX_TABLE_BYTES
from simulator.core.untrusted import read_text_file

HOURS_PER_YEAR = 8760.0
Policy = Literal["now", "best-start", "pause-resume", "scale-down"]
POLICIES: tuple[str, ...] = ("now", "best-start", "pause-resume", "scale-down")
_DP_CELL_LIMIT = 40_000_000  # pause-resume with overhead: DP cells above this are refused, never approximated


# --------------------------------------------------------------------------------------------- grid intensity


@dataclass(frozen=True)
class GridIntensity:
    """A grid's average carbon intensity for one year, with where the number comes from."""

    region: str  # canonical id: 'FR', 'aws:eu-west-3', 'PAPER-BLOOM'
    name: str
    year: int
    kg_per_kwh: float
    source: str
    basis: str = "lifecycle"  # 'lifecycle', 'published', or how a non-lifecycle figure was measured
    grid: str | None = None  # for a cloud region: the grid region it is charged at

    @property
    def g_per_kwh(self) -> float:
        """The same figure in g/kWh, as most tables print it."""
        return self.kg_per_kwh * 1000.0


def _norm(text: str) -> str:
    return "-".join(str(text).strip().lower().replace("_", " ").replace("-", " ").split())


def _lookup_key(region: str) -> str:
    """'aws:us-east-1', 'AWS/us-east-1' and 'aws us_east_1' all become 'aws:us-east-1'; other names are normalised."""
    text = str(region).strip().lower().replace("/", ":")
    if ":" in text:
        provider, _, name = text.partition(":")
        return f"{_norm(provider)}:{_norm(name)}"
    return _norm(text)


def _data_text(relpath: str) -> str:
    return resources.files("simulator").joinpath(f"data/{relpath}").read_text(encoding="utf-8")


def _csv_rows(text: str) -> list[dict[str, str]]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    return [{k.strip(): (v or "").strip() for k, v in row.items()} for row in reader]


@dataclass(frozen=True)
class _GridTable:
    by_region: dict[str, list[GridIntensity]]  # canonical id -> rows, oldest year first
    keys: dict[str, str]  # accepted spelling (normalised) -> canonical id
    clouds: dict[str, tuple[str, str, str]]  # canonical cloud id -> (grid id, location, mapping source)


@lru_cache(maxsize=1)
def _grid_table() -> _GridTable:
    by_region: dict[str, list[GridIntensity]] = {}
    keys: dict[str, str] = {}
    for row in _csv_rows(_data_text("carbon/grid_intensity.csv")):
        gi = GridIntensity(
            region=row["region"],
            name=row["name"],
            year=int(row["year"]),
            kg_per_kwh=float(row["g_per_kwh"]) / 1000.0,
            source=row["source"],
            basis=row["basis"],
        )
        by_region.setdefault(gi.region, []).append(gi)
        for alias in [gi.region, gi.name, *row["aliases"].split(";")]:
            if alias.strip():
                keys[_norm(alias)] = gi.region
    for rows in by_region.values():
        rows.sort(key=lambda g: g.year)
    clouds: dict[str, tuple[str, str, str]] = {}
    bare: dict[str, list[str]] = {}
    for row in _csv_rows(_data_text("carbon/cloud_regions.csv")):
        cid = f"{row['provider']}:{row['region']}"
        if row["grid"] not in by_region:
            raise ClusterSimError(f"cloud_regions.csv: {cid} maps to grid {row['grid']!r}, which has no intensity row")
        clouds[cid] = (row["grid"], row["location"], row["source"])
        keys[_lookup_key(cid)] = cid
        keys[_lookup_key(f"{row['provider']} {row['region']}")] = cid
        bare.setdefault(_norm(row["region"]), []).append(cid)
    for key, cids in bare.items():  # 'us-east-1' alone is fine where only one provider uses the name
        if len(cids) == 1 and key not in keys:
            keys[key] = cids[0]
    return _GridTable(by_region, keys, clouds)


def grid_intensity(region: str, year: int | None = None) -> GridIntensity:
    """Grid intensity of a country ('FR', 'france'), cloud region ('aws:us-east-1') or published footprint ('bloom').

    ``year=None`` gives the latest year bundled. Cloud regions are charged at the grid they sit in, and say so.
    """
    table = _grid_table()
    cid = table.keys.get(_lookup_key(region))
    if cid is None:
        close = difflib.get_close_matches(_lookup_key(region), list(table.keys), n=5, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "list_regions() lists them"
        raise ClusterSimError(f"unknown grid region {region!r}; {hint}")
    cloud = table.clouds.get(cid)
    grid_id = cloud[0] if cloud else cid
    rows = table.by_region[grid_id]
    if year is None:
        row = rows[-1]
    else:
        match = [r for r in rows if r.year == int(year)]
        if not match:
            years = ", ".join(str(r.year) for r in rows)
            raise ClusterSimError(f"no {year} figure for {region!r}; choose year from: {years}")
        row = match[0]
    if cloud is None:
        return row
    provider, name = cid.split(":", 1)
    return GridIntensity(
        region=cid,
        name=f"{provider} {name} ({cloud[1]})",
        year=row.year,
        kg_per_kwh=row.kg_per_kwh,
        source=f"{row.source}; location: {cloud[2]}",
        basis=row.basis,
        grid=grid_id,
    )


def list_regions() -> list[GridIntensity]:
    """Every bundled figure: each grid and year, then each cloud region at its grid's latest year."""
    table = _grid_table()
    out = [gi for rows in table.by_region.values() for gi in rows]
    out += [grid_intensity(cid) for cid in table.clouds]
    return out


# --------------------------------------------------------------------------------------------- hourly series


@dataclass(frozen=True)
class IntensitySeries:
    """Hourly grid intensity (kg CO2e/kWh), hour ``i`` starting at ``start + i h`` (``start`` may be unknown)."""

    values: tuple[float, ...]
    start: datetime | None = None
    source: str = ""

    def __post_init__(self) -> None:
        vals = tuple(float(v) for v in self.values)
        if not vals:
            raise ClusterSimError("an intensity series needs at least one hour")
        bad = next((v for v in vals if not math.isfinite(v) or v < 0), None)
        if bad is not None:
            raise ClusterSimError(f"intensity {bad} kg/kWh is not a non-negative number")
        object.__setattr__(self, "values", vals)

    @classmethod
    def from_g_per_kwh(
        cls, values: Sequence[float], start: datetime | None = None, source: str = ""
    ) -> IntensitySeries:
        """A series from g/kWh figures (the unit most data sources use)."""
        return cls(tuple(float(v) / 1000.0 for v in values), start, source)

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, key: int) -> float: ...

    @overload
    def __getitem__(self, key: slice) -> IntensitySeries: ...

    def __getitem__(self, key: int | slice) -> float | IntensitySeries:
        """An hour's kg/kWh, or a slice of hours as a new series (its start moved along)."""
        if isinstance(key, slice):
            lo, hi, step = key.indices(len(self))
            if step != 1:
                raise ClusterSimError("slice an intensity series with a step of 1 hour")
            if hi <= lo:
                raise ClusterSimError(f"hours {lo}:{hi} of a {len(self)}-hour series are empty")
            start = self.start + timedelta(hours=lo) if self.start is not None else None
            return IntensitySeries(self.values[lo:hi], start, self.source)
        return self.values[key]

    def mean(self) -> float:
        """Average kg/kWh over the series (what a job spread evenly over these hours pays)."""
        return float(np.mean(self.values))

    def timestamp(self, hour: int) -> datetime | None:
        """Start time of hour ``hour`` (None when the series has no start time)."""
        return None if self.start is None else self.start + timedelta(hours=hour)

    def index_of(self, when: datetime | int) -> int:
        """Hour index of ``when`` (an index passes through after a range check)."""
        if isinstance(when, datetime):
            if self.start is None:
                raise ClusterSimError("this series has no timestamps; give the start as an hour index")
            try:
                delta = (when - self.start).total_seconds() / 3600.0
            except TypeError:
                raise ClusterSimError("give a start time with a time zone exactly when the series has one") from None
            if abs(delta - round(delta)) > 1e-9:
                raise ClusterSimError(f"start {when.isoformat()} is not on an hour of the series")
            idx = int(round(delta))
        else:
            idx = int(when)
        if not 0 <= idx < len(self):
            raise ClusterSimError(f"start hour {idx} is outside the series' {len(self)} hours")
        return idx


_TS_COLUMNS = ("timestamp", "datetime", "time", "date")
_G_COLUMNS = ("g_per_kwh", "gco2_per_kwh", "gco2e_per_kwh")
_KG_COLUMNS = ("kg_per_kwh", "kgco2_per_kwh", "kgco2e_per_kwh")


def _parse_time(text: str, where: str) -> datetime:
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ClusterSimError(f"{where}: timestamp {text!r} is not ISO 8601 (e.g. 2024-01-01T00:00:00Z)") from None


def _intensity_reader(p: Path) -> tuple[csv.DictReader, str, str, float]:
    """A CSV reader over the file's non-comment lines, its timestamp and intensity columns, and the scale to kg/kWh."""
    text = read_text_file(p, MAX_TABLE_BYTES, p.name)  # a regular file under the cap, UTF-8
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise ClusterSimError(f"{p.name}: the file is empty; it needs a header and one row per hour")
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    header = {(h or "").strip().lower(): h for h in (reader.fieldnames or [])}
    ts_col = next((header[c] for c in _TS_COLUMNS if c in header), None)
    if ts_col is None:
        raise ClusterSimError(f"{p.name}: no timestamp column; name one of {', '.join(_TS_COLUMNS)} (ISO 8601)")
    val_col, scale = next(((header[c], 1e-3) for c in _G_COLUMNS if c in header), (None, 1.0))
    if val_col is None:
        val_col = next((header[c] for c in _KG_COLUMNS if c in header), None)
    if val_col is None:
        raise ClusterSimError(f"{p.name}: no intensity column; name it g_per_kwh, gco2_per_kwh or kg_per_kwh")
    return reader, ts_col, val_col, scale


def _parse_intensity(raw: str, where: str) -> float:
    """One row's intensity as a finite, non-negative number (in the file's unit)."""
    try:
        v = float(raw)
    except ValueError:
        raise ClusterSimError(f"{where}: intensity {raw!r} is not a number") from None
    if not math.isfinite(v):
        raise ClusterSimError(f"{where}: intensity {raw!r} is not a finite number")
    if v < 0:
        raise ClusterSimError(f"{where}: intensity {raw} is negative")
    return v


def _check_hourly(t: datetime, prev: datetime, where: str) -> None:
    """Reject a timestamp that is not exactly one hour after ``prev`` (same time-zone form)."""
    if (t.tzinfo is None) != (prev.tzinfo is None):
        raise ClusterSimError(f"{where}: mixes timestamps with and without a time zone; use one form")
    step = (t - prev).total_seconds() / 3600.0
    if step <= 0:
        raise ClusterSimError(f"{where}: timestamp {t.isoformat()} is not after the previous one; sort by time")
    if abs(step - 1.0) > 1e-9:
        raise ClusterSimError(f"{where}: {step:g} h after the previous row; the series must be hourly, no gaps")


def load_intensity_series(path: str | Path) -> IntensitySeries:
    """Read an hourly CSV: a ``timestamp`` column (ISO 8601) and ``g_per_kwh``, ``gco2_per_kwh`` or ``kg_per_kwh``.

    Lines starting with '#' are comments. Rows must be hourly, sorted and without gaps, so an hour index is a time.
    """
    p = Path(path)
    if not p.is_file():
        raise ClusterSimError(f"intensity file {str(p)!r} does not exist")
    reader, ts_col, val_col, scale = _intensity_reader(p)
    times: list[datetime] = []
    values: list[float] = []
    for n, row in enumerate(reader, start=2):
        where = f"{p.name} data row {n - 1}"
        v = _parse_intensity((row.get(val_col) or "").strip(), where)
        t = _parse_time(row.get(ts_col) or "", where)
        if times:
            _check_hourly(t, times[-1], where)
        times.append(t)
        values.append(v * scale)
    if not values:
        raise ClusterSimError(f"{p.name}: the file has a header but no rows")
    return IntensitySeries(tuple(values), times[0], f"{p.name} ({val_col})")


# --------------------------------------------------------------------------------------------- operational carbon


def _hour_weights(hours: float) -> list[float]:
    """Share of a job's run time in each hour from its start: 1, 1, ..., remainder."""
    if not hours > 0 or not math.isfinite(hours):
        raise ClusterSimError(f"hours={hours} must be a positive number")
    full = int(math.floor(hours + 1e-12))
    rest = hours - full
    weights = [1.0] * full + ([rest] if rest > 1e-12 else [])
    return weights


def effective_kg_per_kwh(
    location_kg_per_kwh: float,
    *,
    market_kg_per_kwh: float | None = None,
    renewable_fraction: float = 0.0,
) -> float:
    """The factor to charge: location-based by default; market-based factor or contracted renewable share on request.

    ``market_kg_per_kwh`` replaces the grid figure (e.g. a supplier's contractual factor); ``renewable_fraction`` counts
    that share of the energy at zero (PPAs/certificates) and the rest at ``market_kg_per_kwh`` if given, else the grid.
    """
    if not 0.0 <= renewable_fraction <= 1.0:
        raise ClusterSimError(f"renewable_fraction={renewable_fraction} must be between 0 and 1")
    if market_kg_per_kwh is not None and not 0 <= market_kg_per_kwh < math.inf:
        raise ClusterSimError(f"market_kg_per_kwh={market_kg_per_kwh} must be a finite number >= 0")
    if not 0 <= location_kg_per_kwh < math.inf:
        raise ClusterSimError(f"grid intensity {location_kg_per_kwh} kg/kWh must be a finite number >= 0")
    base = location_kg_per_kwh if market_kg_per_kwh is None else market_kg_per_kwh
    return base * (1.0 - renewable_fraction)


def operational_kgco2e(
    energy_kwh: float,
    intensity: float | GridIntensity | IntensitySeries,
    *,
    start: int | datetime = 0,
    hours: float | None = None,
    power_profile: Sequence[float] | None = None,
    market_kg_per_kwh: float | None = None,
    renewable_fraction: float = 0.0,
) -> float:
    """The kg CO2e of ``energy_kwh`` (facility energy) charged at a flat factor or an hourly series.

    With a series the job starts at hour ``start`` and its energy is spread evenly over ``hours`` (a fractional last
    hour gets its share) unless ``power_profile`` gives a relative power per hour (kW or any unit; it is rescaled to
    ``energy_kwh``). Market-based options apply per hour, as in :func:`effective_kg_per_kwh`.
    """
    if not energy_kwh >= 0 or not math.isfinite(energy_kwh):
        raise ClusterSimError(f"energy_kwh={energy_kwh} must be a non-negative number")
    if isinstance(intensity, GridIntensity):
        intensity = intensity.kg_per_kwh
    if not isinstance(intensity, IntensitySeries):
        if not 0 <= float(intensity) < math.inf:
            raise ClusterSimError(f"intensity {intensity} kg/kWh must be a finite number >= 0")
        factor = effective_kg_per_kwh(
            float(intensity), market_kg_per_kwh=market_kg_per_kwh, renewable_fraction=renewable_fraction
        )
        return energy_kwh * factor
    if power_profile is not None:
        weights = [float(w) for w in power_profile]
        if not weights or any(not w >= 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
            raise ClusterSimError("power_profile needs one non-negative power per hour, not all zero")
        if hours is not None and len(weights) != math.ceil(hours - 1e-12):
            raise ClusterSimError(f"power_profile has {len(weights)} hours but hours={hours:g}; give one or match them")
    elif hours is None:
        raise ClusterSimError("give hours= (the job's duration) or power_profile= to charge energy against a series")
    else:
        weights = _hour_weights(hours)
    first = intensity.index_of(start)
    if first + len(weights) > len(intensity):
        raise ClusterSimError(
            f"the job needs hours {first}..{first + len(weights) - 1} but the series has {len(intensity)}; "
            "give a longer series or an earlier start"
        )
    total_w = sum(weights)
    kg = 0.0
    for i, w in enumerate(weights):
        factor = effective_kg_per_kwh(
            intensity[first + i], market_kg_per_kwh=market_kg_per_kwh, renewable_fraction=renewable_fraction
        )
        kg += energy_kwh * (w / total_w) * factor
    return kg


# --------------------------------------------------------------------------------------------- embodied carbon


@dataclass(frozen=True)
class EmbodiedCarbon:
    """Manufacturing carbon charged to a job: the hardware's embodied kg x the job's share of its service life."""

    gpu: str
    gpu_hours: float
    kgco2e: float
    gpu_kgco2e: float
    server_kgco2e: float
    gpus_per_node: int
    lifetime_years: float
    utilization: float
    estimate: bool
    source: str

    @property
    def kg_per_gpu_hour(self) -> float:
        """Embodied kg charged per GPU-hour of use."""
        return self.kgco2e / self.gpu_hours if self.gpu_hours else 0.0


@lru_cache(maxsize=1)
def _embodied_table() -> dict:
    return yaml.safe_load(_data_text("embodied.yaml"))


def _gpu_id(gpu: str, extra: Sequence[str] = ()) -> str:
    """Catalogue id of ``gpu`` (aliases resolved); a name only the data table knows (e.g. 'v100') passes as itself."""
    from hwmodels.catalogue import get_gpu

    try:
        return get_gpu(gpu).id
    except UnknownNameError:
        key = _norm(gpu)
        if key in extra:
            return key
        raise


def embodied_estimate(
    gpu: str,
    gpu_hours: float,
    *,
    gpus_per_node: int = 8,
    lifetime_years: float | None = None,
    utilization: float | None = None,
) -> EmbodiedCarbon:
    """Embodied kg CO2e of ``gpu_hours`` on ``gpu``: (GPU + server / gpus_per_node) / (life x 8760 h x utilization).

    Defaults (6 years, 85% use) are Luccioni et al. 2022's, so BLOOM's published 11.2 t is reproduced. A GPU without its
    own figure gets the default figure and its source says so.
    """
    table = _embodied_table()
    am = table["amortisation"]
    life = float(am["lifetime_years"]) if lifetime_years is None else float(lifetime_years)
    use = float(am["utilization"]) if utilization is None else float(utilization)
    if not gpu_hours >= 0 or not math.isfinite(gpu_hours):
        raise ClusterSimError(f"gpu_hours={gpu_hours} must be a non-negative number")
    if not 0 < life < math.inf:
        raise ClusterSimError(f"lifetime_years={lifetime_years} must be a finite number > 0")
    if not 0 < use <= 1:
        raise ClusterSimError(f"utilization={utilization} must be in (0, 1]")
    if int(gpus_per_node) != gpus_per_node or gpus_per_node < 1:
        raise ClusterSimError(f"gpus_per_node={gpus_per_node} must be a positive whole number")
    gid = _gpu_id(gpu, tuple(table["gpus"]))
    entry = table["gpus"].get(gid)
    if entry is None:
        entry, source = table["default"], f"{gid}: {table['default']['source']}"
    else:
        source = entry["source"]
    per_gpu = float(entry["gpu_kgco2e"]) + float(entry["server_kgco2e"]) / int(gpus_per_node)
    kg = per_gpu * gpu_hours / (life * HOURS_PER_YEAR * use)
    amort = f"amortised over {life:g} years at {use:.0%} use"
    if lifetime_years is None and utilization is None:
        amort += f" ({am['source']})"
    return EmbodiedCarbon(
        gpu=gid,
        gpu_hours=float(gpu_hours),
        kgco2e=kg,
        gpu_kgco2e=float(entry["gpu_kgco2e"]),
        server_kgco2e=float(entry["server_kgco2e"]),
        gpus_per_node=int(gpus_per_node),
        lifetime_years=life,
        utilization=use,
        estimate=bool(entry.get("estimate", False)),
        source=f"{source}; {amort}",
    )


def embodied_kgco2e(
    gpu: str,
    gpu_hours: float,
    *,
    gpus_per_node: int = 8,
    lifetime_years: float | None = None,
    utilization: float | None = None,
) -> float:
    """Embodied kg CO2e of ``gpu_hours`` on ``gpu`` (see :func:`embodied_estimate` for the figures and sources)."""
    return embodied_estimate(
        gpu, gpu_hours, gpus_per_node=gpus_per_node, lifetime_years=lifetime_years, utilization=utilization
    ).kgco2e


# --------------------------------------------------------------------------------------------- one job's footprint


@dataclass(frozen=True)
class Footprint:
    """Energy and carbon of one job, split so results can show where the carbon comes from."""

    energy_kwh: float  # facility energy: GPU-hours x power x PUE
    operational_kgco2e: float
    embodied_kgco2e: float
    intensity_kg_per_kwh: float  # the average factor the energy was charged at
    sources: tuple[str, ...] = field(default=())

    @property
    def total_kgco2e(self) -> float:
        """Operational plus embodied."""
        return self.operational_kgco2e + self.embodied_kgco2e

    @property
    def tco2e(self) -> float:
        """Total in tonnes."""
        return self.total_kgco2e / 1000.0


def job_footprint(
    gpu: str,
    gpu_hours: float,
    *,
    pue: float,
    intensity: float | str | GridIntensity | IntensitySeries,
    power_w_per_gpu: float | None = None,
    start: int | datetime = 0,
    hours: float | None = None,
    market_kg_per_kwh: float | None = None,
    renewable_fraction: float = 0.0,
    gpus_per_node: int = 8,
    lifetime_years: float | None = None,
    utilization: float | None = None,
) -> Footprint:
    """The kWh and kg CO2e of ``gpu_hours`` on ``gpu`` at ``power_w_per_gpu`` (default: catalogue TDP) and ``pue``.

    ``intensity`` is a kg/kWh factor, a region name for :func:`grid_intensity`, or an hourly series (then ``hours`` is
    the job's wall-clock duration from ``start``).
    """
    from hwmodels.catalogue import get_gpu

    if power_w_per_gpu is None:
        power_w_per_gpu = get_gpu(gpu).tdp_w
    energy_kwh = tdp_energy_mwh(gpu_hours, power_w_per_gpu, pue) * 1000.0
    sources: list[str] = []
    if isinstance(intensity, str):
        intensity = grid_intensity(intensity)
    if isinstance(intensity, GridIntensity):
        sources.append(f"grid {intensity.region} {intensity.year}: {intensity.source}")
        intensity = intensity.kg_per_kwh
    elif isinstance(intensity, IntensitySeries) and intensity.source:
        sources.append(f"grid series: {intensity.source}")
    op = operational_kgco2e(
        energy_kwh,
        intensity,
        start=start,
        hours=hours,
        market_kg_per_kwh=market_kg_per_kwh,
        renewable_fraction=renewable_fraction,
    )
    emb = embodied_estimate(
        gpu, gpu_hours, gpus_per_node=gpus_per_node, lifetime_years=lifetime_years, utilization=utilization
    )
    sources.append(f"embodied: {emb.source}")
    return Footprint(
        energy_kwh=energy_kwh,
        operational_kgco2e=op,
        embodied_kgco2e=emb.kgco2e,
        intensity_kg_per_kwh=op / energy_kwh if energy_kwh else 0.0,
        sources=tuple(sources),
    )


# --------------------------------------------------------------------------------------------- scheduling


@dataclass(frozen=True)
class Schedule:
    """When a job runs, hour by hour from ``now``, and its carbon against running now.

    ``fractions[h]`` is the share of the job's full GPU allocation (hence of its full power) running during hour
    ``now + h``; ``progress[h]`` is the full-rate hours of work done then (equal to ``fractions`` at full rate; lower
    during resume overhead; higher per GPU when scaled down with sublinear scaling).
    """

    policy: str
    now: int
    fractions: tuple[float, ...]
    progress: tuple[float, ...]
    start_h: float  # hours from now until the job first runs
    finish_h: float  # hours from now until it completes
    energy_kwh: float
    kgco2e: float
    baseline_kgco2e: float  # policy "now": start at once, run contiguously at full rate
    resumes: int = 0
    series_start: datetime | None = None

    @property
    def saving_kg(self) -> float:
        """The kg CO2e saved against running now."""
        return self.baseline_kgco2e - self.kgco2e

    @property
    def saving_pct(self) -> float:
        """Saving as a percentage of the run-now carbon (0 when that is zero)."""
        return 100.0 * self.saving_kg / self.baseline_kgco2e if self.baseline_kgco2e > 0 else 0.0

    @property
    def start_time(self) -> datetime | None:
        """Wall-clock start, when the series has timestamps."""
        return self._at(self.start_h)

    @property
    def finish_time(self) -> datetime | None:
        """Wall-clock finish, when the series has timestamps."""
        return self._at(self.finish_h)

    def _at(self, offset_h: float) -> datetime | None:
        if self.series_start is None:
            return None
        return self.series_start + timedelta(hours=self.now + offset_h)


def _carbon(fractions: Sequence[float], costs: np.ndarray) -> float:
    return float(np.dot(np.asarray(fractions, dtype=float), costs[: len(fractions)]))


def _contiguous(job_hours: float, window: int, offset: int, partial_first: bool = False) -> list[float]:
    """Run from hour ``offset`` at full rate; the partial hour (if any) ends the run, or starts it late."""
    weights = _hour_weights(job_hours)
    if partial_first:
        weights = weights[-1:] + weights[:-1]
    return [0.0] * offset + weights + [0.0] * (window - offset - len(weights))


def _best_start(job_hours: float, costs: np.ndarray) -> list[float]:
    """Every contiguous placement (starting on the hour, or late so the partial hour comes first): the least carbon."""
    window = len(costs)
    n = len(_hour_weights(job_hours))
    best: tuple[float, list[float]] | None = None
    for s in range(window - n + 1):  # earliest start wins ties
        for partial_first in (False, True):
            plan = _contiguous(job_hours, window, s, partial_first)
            kg = _carbon(plan, costs)
            if best is None or kg < best[0] - 1e-12:
                best = (kg, plan)
    assert best is not None
    return best[1]


def _pause_resume_free(job_hours: float, costs: np.ndarray) -> list[float]:
    """No overhead: fill the cheapest hours (fractional knapsack, exact); the partial hour is the dearest chosen."""
    order = sorted(range(len(costs)), key=lambda t: (costs[t], t))
    fractions = [0.0] * len(costs)
    left = job_hours
    for t in order:
        if left <= 1e-12:
            break
        take = min(1.0, left)
        fractions[t] = take
        left -= take
    return fractions


@dataclass(frozen=True)
class _SegmentDP:
    """Least-carbon run plans with resumable segments, as a table over hours and states.

    ``g[t, n, j, r, u, l, p]``: least cost of hours 0..t having run ``n`` hours in ``j`` segments; ``r``: hour t
    runs; ``u``: the one partial hour (charged ``frac`` of a full hour) is used; ``l``: hours in the running
    segment so far (capped at ``cap``); ``p``: the running segment holds the partial hour. The partial hour
    sits at a segment's first or last hour (the job resumes late in an hour or pauses early in one), so a
    segment may resume in the hour right after another ended (the pause inside that hour). Every
    segment after the first spends its first ``overhead_h`` hours restarting, so it must run at least that
    long: ``valid[j, l, p]`` says whether segment ``j`` of ``l`` hours may end.
    """

    costs: np.ndarray
    frac: float
    overhead_h: float
    g: np.ndarray
    valid: np.ndarray

    @property
    def cap(self) -> int:
        """Segment lengths tracked exactly below this many hours (longer ones are always long enough)."""
        return self.g.shape[5] - 1

    @classmethod
    def solve(cls, costs: np.ndarray, m_hi: int, k_hi: int, frac: float, overhead_h: float) -> _SegmentDP:
        """Fill the table for up to ``m_hi`` run hours in up to ``k_hi`` segments."""
        cap = int(math.floor(overhead_h)) + 2  # a segment of >= cap hours runs > overhead_h even with the partial
        j = np.arange(k_hi + 1)[:, None, None]
        length = np.arange(cap + 1)[None, :, None] - (1.0 - frac) * np.arange(2)[None, None, :]
        valid = (j <= 1) | (length >= overhead_h - 1e-9)
        g = np.full((len(costs), m_hi + 1, k_hi + 1, 2, 2, cap + 1, 2), math.inf)
        dp = cls(costs, frac, overhead_h, g, valid)
        for t in range(len(costs)):
            dp._step(t)
        return dp

    def _prev(self, t: int) -> np.ndarray:
        if t:
            return self.g[t - 1]
        init = np.full(self.g.shape[1:], math.inf)
        init[0, 0, 0, 0, 0, 0] = 0.0
        return init

    def _step(self, t: int) -> None:
        prev, cur, cap, c = self._prev(t), self.g[t], self.cap, self.costs[t]
        ended = np.where(self.valid[None, :, None, :, :], prev[:, :, 1], math.inf).min(axis=(3, 4))
        cur[:, :, 0, :, 0, 0] = np.minimum(prev[:, :, 0, :, 0, 0], ended)
        if t:  # the segment that ended at t-1 paused early in its last hour: that hour is the partial one
            retro = np.where(self.valid[None, :, :, 1], prev[:, :, 1, 0, :, 0], math.inf).min(axis=2)
            cur[:, :, 0, 1, 0, 0] = np.minimum(cur[:, :, 0, 1, 0, 0], retro - (1.0 - self.frac) * self.costs[t - 1])
        cont = prev[:-1, :, 1] + c
        cur[1:, :, 1, :, 1:cap] = cont[:, :, :, 0 : cap - 1]
        cur[1:, :, 1, :, cap] = np.minimum(cont[:, :, :, cap - 1], cont[:, :, :, cap])
        cur[1:, 1:, 1, :, 1, 0] = np.minimum(cur[1:, 1:, 1, :, 1, 0], prev[:-1, :-1, 0, :, 0, 0] + c)
        cur[1:, 1:, 1, 1, 1, 1] = np.minimum(cur[1:, 1:, 1, 1, 1, 1], prev[:-1, :-1, 0, 0, 0, 0] + self.frac * c)
        if t:  # or resumes late in hour t right after a segment that ran to the end of hour t-1 (a pause inside t)
            adjacent = np.where(self.valid[None, :-1, :, 0], prev[:-1, :-1, 1, 0, :, 0], math.inf).min(axis=2)
            cur[1:, 1:, 1, 1, 1, 1] = np.minimum(cur[1:, 1:, 1, 1, 1, 1], adjacent + self.frac * c)

    def best_end(self, m: int, k: int) -> tuple[float, int, tuple[int, ...], bool]:
        """(cost, last hour, final state, last hour partial) of the cheapest plan of ``m`` hours in ``k`` segments."""
        best: tuple[float, int, tuple[int, ...], bool] = (math.inf, -1, (), False)
        for last in range(len(self.costs)):
            for l_ in range(1, self.cap + 1):
                for p in (0, 1):
                    if self.valid[k, l_, p] and self.g[last, m, k, 1, 1, l_, p] < best[0]:
                        best = (float(self.g[last, m, k, 1, 1, l_, p]), last, (m, k, 1, 1, l_, p), False)
                if self.valid[k, l_, 1]:
                    v = self.g[last, m, k, 1, 0, l_, 0] - (1.0 - self.frac) * self.costs[last]
                    if v < best[0]:
                        best = (float(v), last, (m, k, 1, 0, l_, 0), True)
        return best

    def _candidates(self, t: int, state: tuple[int, ...]) -> list[tuple[float, tuple[int, ...], int]]:
        """(value, previous state, hour made partial or -1) of every transition into ``state`` at hour ``t``."""
        prev, c, cap = self._prev(t), self.costs[t], self.cap
        n, j, r, u, l_, p = state
        out: list[tuple[float, tuple[int, ...], int]] = []
        if r == 1 and n >= 1:
            for lp in (l_ - 1,) if l_ < cap else (cap - 1, cap):
                if lp >= 1:
                    out.append((prev[n - 1, j, 1, u, lp, p] + c, (n - 1, j, 1, u, lp, p), -1))
            if l_ == 1 and j >= 1:
                if p == 0:
                    out.append((prev[n - 1, j - 1, 0, u, 0, 0] + c, (n - 1, j - 1, 0, u, 0, 0), -1))
                elif u == 1:
                    out.append((prev[n - 1, j - 1, 0, 0, 0, 0] + self.frac * c, (n - 1, j - 1, 0, 0, 0, 0), t))
                    out += [
                        (prev[n - 1, j - 1, 1, 0, lp, 0] + self.frac * c, (n - 1, j - 1, 1, 0, lp, 0), t)
                        for lp in range(1, cap + 1)
                        if t and self.valid[j - 1, lp, 0]
                    ]
            return out
        if r == 1:
            return out
        out.append((prev[n, j, 0, u, 0, 0], (n, j, 0, u, 0, 0), -1))
        for lp in range(1, cap + 1):
            out += [(prev[n, j, 1, u, lp, pp], (n, j, 1, u, lp, pp), -1) for pp in (0, 1) if self.valid[j, lp, pp]]
            if u == 1 and t and self.valid[j, lp, 1]:
                v = prev[n, j, 1, 0, lp, 0] - (1.0 - self.frac) * self.costs[t - 1]
                out.append((v, (n, j, 1, 0, lp, 0), t - 1))
        return out

    def path(self, last: int, state: tuple[int, ...]) -> tuple[dict[int, bool], list[int]]:
        """Walk back from ``state`` at hour ``last``: ({hour: is_partial} for every hour that runs, the hours at
        which segments start, in order)."""
        run: dict[int, bool] = {}
        starts: list[int] = []
        for t in range(last, -1, -1):
            if state[2] == 1:
                run.setdefault(t, False)
                if state[4] == 1:  # the running segment is one hour long here: it started at t
                    starts.append(t)
            _, state, partial = min(self._candidates(t, state), key=lambda x: x[0])
            if partial >= 0:
                run[partial] = True
        return run, starts[::-1]


def _pause_resume_overhead(job_hours: float, overhead_h: float, costs: np.ndarray) -> tuple[list[float], list[int]]:
    """Exact DP: k segments need job_hours + (k-1) x overhead of run time, in whole hours plus one partial hour,
    and every resumed segment runs at least the overhead.

    Grouped by the partial hour's share (it depends on k); one DP per group, the least carbon over all k wins.
    Returns (fraction of each hour the job runs, the hours at which its segments start).
    """
    window = len(costs)
    groups = _segment_groups(job_hours, overhead_h, window)
    per_cell = 8 * (int(math.floor(overhead_h)) + 3)  # r, u, p and the tracked segment lengths
    cells = sum(window * (max(m for _, m, _ in ks) + 1) * (max(k for k, _, _ in ks) + 1) for ks in groups.values())
    cells *= per_cell
    if cells > _DP_CELL_LIMIT:
        raise ClusterSimError(
            f"pause-resume with a {overhead_h:g} h resume overhead over {window} hours is too large to solve exactly; "
            "shorten the deadline, round the overhead to whole hours, or set resume_overhead_h=0"
        )
    best: tuple[float, list[float], list[int]] | None = None
    for ks in groups.values():
        frac = ks[0][2]
        dp = _SegmentDP.solve(costs, max(m for _, m, _ in ks), max(k for k, _, _ in ks), frac, overhead_h)
        for k, m, _ in ks:
            value, last, state, last_partial = dp.best_end(m, k)
            if not math.isfinite(value) or (best is not None and value >= best[0] - 1e-12):
                continue
            run, starts = dp.path(last, state)
            run[last] = run.get(last, False) or last_partial
            fractions = [0.0] * window
            for t, partial in run.items():
                fractions[t] = frac if partial else 1.0
            best = (value, fractions, starts)
    if best is None:
        raise ClusterSimError(f"no pause-resume schedule fits the deadline; set deadline_h >= {math.ceil(job_hours)}")
    return best[1], best[2]


def _segment_groups(job_hours: float, overhead_h: float, window: int) -> dict[float, list[tuple[int, int, float]]]:
    """Segment counts k with their whole-plus-partial run hours m, grouped by the partial hour's share."""
    k_max = max(1, min((window + 1) // 2, int(math.floor((window - job_hours) / overhead_h + 1e-9)) + 1))
    groups: dict[float, list[tuple[int, int, float]]] = {}
    for k in range(1, k_max + 1):
        need = job_hours + (k - 1) * overhead_h
        m = math.ceil(need - 1e-9)
        if m > window:
            continue
        frac = min(1.0, max(0.0, need - (m - 1)))
        groups.setdefault(round(frac, 9), []).append((k, m, frac))
    return groups


def _scale_down(job_hours: float, costs: np.ndarray, low: float, exponent: float) -> tuple[list[float], list[float]]:
    """Contiguous from now, each hour on between ``low`` x GPUs and all of them; the least-carbon finishing hour.

    Progress x in an hour costs low/p x cost per unit up to p = low**exponent (scaled down part of the hour, or of
    the time when the last hour stops early), then (1-low)/(1-p) x cost per unit up to 1 (the share of the hour on all
    GPUs). That is convex when exponent <= 1, so for a fixed finishing hour filling the cheapest units first (greedy)
    is optimal; hours before the last run at least scaled down (no pausing in this policy).
    """
    window = len(costs)
    p = low**exponent
    slope_low, slope_up = low / p, (1.0 - low) / (1.0 - p)
    best: tuple[float, list[float], list[float]] | None = None
    for end in range(math.ceil(job_hours - 1e-12), window + 1):
        forced = (end - 1) * p
        if forced > job_hours + 1e-12:
            break
        x = [p] * (end - 1) + [0.0]
        units = [(slope_low * costs[end - 1], 0, end - 1)] + [(slope_up * costs[t], 1, t) for t in range(end)]
        left = job_hours - forced
        for _, kind, t in sorted(units):  # for the last hour the scaled-down part sorts first (kind 0)
            if left <= 1e-12:
                break
            take = min((p if kind == 0 else 1.0) - x[t], left)
            x[t] += take
            left -= take
        if left > 1e-9 or x[end - 1] <= 1e-12:
            continue
        fractions = [low * xi / p if xi <= p else (xi - p) / (1.0 - p) * (1.0 - low) + low for xi in x]
        kg = _carbon(fractions, costs)
        if best is None or kg < best[0] - 1e-12:
            best = (kg, fractions, x)
    if best is None:  # the run-now plan always fits once the deadline check passed
        raise ClusterSimError(f"no scale-down schedule fits the deadline; set deadline_h >= {math.ceil(job_hours)}")
    pad = [0.0] * (window - len(best[1]))
    return best[1] + pad, best[2] + pad


def _progress_with_overhead(fractions: Sequence[float], overhead_h: float, starts: Sequence[int]) -> list[float]:
    """Work done per hour: the first ``overhead_h`` hours of running of each segment after the first (segments
    start at ``starts``) make no progress."""
    progress = [float(f) for f in fractions]
    resumed = set(starts[1:])
    owed = 0.0
    for t, f in enumerate(fractions):
        if f <= 0:
            continue
        if t in resumed:
            owed = overhead_h
        lost = min(owed, progress[t])
        progress[t] -= lost
        owed -= lost
    return progress


def _check_schedule_args(
    policy: str,
    job_hours: float,
    power_kw: float,
    resume_overhead_h: float,
    low_fraction: float,
    throughput_exponent: float,
    deadline_h: float,
) -> None:
    """Reject :func:`schedule_job` arguments out of range, one argument per one-line error."""
    if policy not in POLICIES:
        raise ClusterSimError(f"unknown policy {policy!r}; choose one of: {', '.join(POLICIES)}")
    if not job_hours > 0 or not math.isfinite(job_hours):
        raise ClusterSimError(f"job_hours={job_hours} must be a positive number")
    if not power_kw > 0 or not math.isfinite(power_kw):
        raise ClusterSimError(f"power_kw={power_kw} must be a positive number")
    if not resume_overhead_h >= 0 or not math.isfinite(resume_overhead_h):
        raise ClusterSimError(f"resume_overhead_h={resume_overhead_h} must be a number >= 0")
    if not 0 < low_fraction < 1:
        raise ClusterSimError(f"low_fraction={low_fraction} must be between 0 and 1 (exclusive)")
    if not 0 < throughput_exponent <= 1:
        raise ClusterSimError(f"throughput_exponent={throughput_exponent} must be in (0, 1] (1 = linear scaling)")
    if not math.isfinite(deadline_h):
        raise ClusterSimError(f"deadline_h={deadline_h} must be a number of hours")


def _schedule_window(series_hours: int, idx: int, job_hours: float, deadline_h: float) -> int:
    """Whole hours from hour ``idx`` to the deadline, checked to hold the job and to lie inside the series."""
    window = int(math.floor(deadline_h + 1e-9))
    needed = math.ceil(job_hours - 1e-12)
    if window < needed:
        raise ClusterSimError(
            f"the job needs {job_hours:g} h at full rate but the deadline allows {max(window, 0)} h; "
            f"set deadline_h >= {needed}"
        )
    if idx + window > series_hours:
        raise ClusterSimError(
            f"the deadline reaches hour {idx + window} but the series ends at hour {series_hours}; "
            f"set deadline_h <= {series_hours - idx} or give a longer series"
        )
    return window


def _pause_resume(job_hours: float, overhead_h: float, costs: np.ndarray) -> tuple[list[float], list[float], int]:
    """Pause-resume plan: (fractions per hour, progress per hour, number of resumes)."""
    window = len(costs)
    if overhead_h > 0:
        fractions, starts = _pause_resume_overhead(job_hours, overhead_h, costs)
        return fractions, _progress_with_overhead(fractions, overhead_h, starts), len(starts) - 1
    fractions = _pause_resume_free(job_hours, costs)
    on = [f > 0 for f in fractions]
    resumes = max(0, sum(1 for t, x in enumerate(on) if x and (t == 0 or not on[t - 1])) - 1)
    # a partial hour between two running hours pauses inside it: one more resume (free here, overhead 0)
    resumes += sum(1 for t in range(1, window - 1) if 0 < fractions[t] < 1 and on[t - 1] and on[t + 1])
    return fractions, list(fractions), resumes


def _start_finish(
    fractions: Sequence[float], progress: Sequence[float], scaled_rate: float | None
) -> tuple[float, float]:
    """Hours from now until the job first runs and until it completes.

    ``scaled_rate`` is the scaled-down throughput (scale-down policy), None at full rate.
    """
    hours_on = [t for t, f in enumerate(fractions) if f > 1e-12]
    first, last = hours_on[0], hours_on[-1]
    if scaled_rate is not None:
        p = scaled_rate
        start_h, finish_h = float(first), last + (progress[last] / p if progress[last] < p else 1.0)
    else:  # at full rate the one partial hour either ends the job early or starts it late
        start_h = first + (1.0 - fractions[first]) if first != last else float(first)
        finish_h = last + fractions[last]
    return start_h, finish_h


def schedule_job(
    series: IntensitySeries,
    *,
    job_hours: float,
    power_kw: float,
    deadline_h: float,
    now: int | datetime = 0,
    policy: Policy = "best-start",
    resume_overhead_h: float = 0.0,
    low_fraction: float = 0.5,
    throughput_exponent: float = 1.0,
) -> Schedule:
    """Plan ``job_hours`` of full-rate work at ``power_kw`` (facility) to finish within ``deadline_h`` of ``now``.

    Hours are the series' hours, so a fractional deadline is rounded down. ``resume_overhead_h`` (pause-resume) is
    the run time each resume costs (checkpoint reload, warm-up) at full power; ``low_fraction`` (scale-down) is the
    share of GPUs kept in high-carbon hours, whose throughput is ``low_fraction ** throughput_exponent`` of full.
    """
    _check_schedule_args(policy, job_hours, power_kw, resume_overhead_h, low_fraction, throughput_exponent, deadline_h)
    idx = series.index_of(now)
    window = _schedule_window(len(series), idx, job_hours, deadline_h)
    costs = np.asarray(series.values[idx : idx + window]) * power_kw  # kg per hour at full power
    baseline = _contiguous(job_hours, window, 0)
    resumes = 0
    if policy == "now":
        fractions, progress = baseline, baseline
    elif policy == "best-start":
        fractions = _best_start(job_hours, costs)
        progress = fractions
    elif policy == "pause-resume":
        fractions, progress, resumes = _pause_resume(job_hours, resume_overhead_h, costs)
    else:
        fractions, progress = _scale_down(job_hours, costs, low_fraction, throughput_exponent)
    scaled = low_fraction**throughput_exponent if policy == "scale-down" else None
    start_h, finish_h = _start_finish(fractions, progress, scaled)
    return Schedule(
        policy=policy,
        now=idx,
        fractions=tuple(float(f) for f in fractions),
        progress=tuple(float(x) for x in progress),
        start_h=float(start_h),
        finish_h=float(finish_h),
        energy_kwh=float(sum(fractions) * power_kw),
        kgco2e=_carbon(fractions, costs),
        baseline_kgco2e=_carbon(baseline, costs),
        resumes=resumes,
        series_start=series.start,
    )


def compare_policies(
    series: IntensitySeries,
    *,
    job_hours: float,
    power_kw: float,
    deadline_h: float,
    now: int | datetime = 0,
    resume_overhead_h: float = 0.0,
    low_fraction: float = 0.5,
    throughput_exponent: float = 1.0,
) -> dict[str, Schedule]:
    """Every policy for the same job, keyed by policy name (for a savings table)."""
    return {
        p: schedule_job(
            series,
            job_hours=job_hours,
            power_kw=power_kw,
            deadline_h=deadline_h,
            now=now,
            policy=p,  # type: ignore[arg-type]
            resume_overhead_h=resume_overhead_h,
            low_fraction=low_fraction,
            throughput_exponent=throughput_exponent,
        )
        for p in POLICIES
    }


# --------------------------------------------------------------------------------------------- published footprints

#: How each ``basis`` in training_footprints.csv turns GPU-hours x power into energy (MWh) and tCO2e.
FOOTPRINT_BASES: dict[str, str] = {
    "tdp": "GPU-hours x TDP x PUE = energy; energy x grid = tCO2e (Meta's LLaMA / Llama 2 method)",
    "tdp_dynamic_only": (
        "GPU-hours x TDP = energy, no PUE; energy x grid = tCO2e (Luccioni et al.'s 'dynamic' share for BLOOM: PUE,"
        " idle and embodied are reported as separate shares, so the row's PUE is not applied)"
    ),
    "measured_system": (
        "GPU-hours x measured average system power per processor x PUE = energy; energy x grid = tCO2e"
        " (Patterson et al. 2021; the power is measured, not TDP)"
    ),
}


def tdp_energy_mwh(gpu_hours: float, power_w_per_gpu: float, pue: float = 1.0) -> float:
    """Facility energy in MWh of ``gpu_hours`` at ``power_w_per_gpu`` (TDP or measured) with ``pue``."""
    if not 0 <= gpu_hours < math.inf or not 0 <= power_w_per_gpu < math.inf:
        raise ClusterSimError("gpu_hours and power_w_per_gpu must be finite non-negative numbers")
    if not 1.0 <= pue < math.inf:
        raise ClusterSimError(f"pue={pue} must be a finite number >= 1 (facility energy / IT energy)")
    return gpu_hours * power_w_per_gpu * pue / 1e6


def tdp_tco2e(gpu_hours: float, power_w_per_gpu: float, pue: float, grid_kg_per_kwh: float) -> float:
    """Operational tCO2e of ``gpu_hours`` at ``power_w_per_gpu``, ``pue`` and a grid factor (MWh x kg/kWh = t)."""
    if not 0 <= grid_kg_per_kwh < math.inf:
        raise ClusterSimError(f"grid_kg_per_kwh={grid_kg_per_kwh} must be a finite number >= 0")
    return tdp_energy_mwh(gpu_hours, power_w_per_gpu, pue) * grid_kg_per_kwh


def predict_footprint(
    basis: str, gpu_hours: float, power_w_per_gpu: float, pue: float, grid_kg_per_kwh: float
) -> tuple[float, float]:
    """(energy MWh, tCO2e) the way a published footprint of ``basis`` computed them (see FOOTPRINT_BASES)."""
    if basis not in FOOTPRINT_BASES:
        raise ClusterSimError(f"unknown footprint basis {basis!r}; choose one of: {', '.join(FOOTPRINT_BASES)}")
    applied_pue = 1.0 if basis == "tdp_dynamic_only" else pue
    energy = tdp_energy_mwh(gpu_hours, power_w_per_gpu, applied_pue)
    return energy, energy * grid_kg_per_kwh


@dataclass(frozen=True)
class FootprintComparison:
    """A published training footprint and the GPU-hours x power x PUE x grid prediction of it."""

    model: str
    basis: str
    gpu: str
    gpu_hours: float
    published_energy_mwh: float | None  # None where the source gives only tCO2e
    predicted_energy_mwh: float
    published_tco2e: float
    predicted_tco2e: float
    source: str

    @property
    def energy_error(self) -> float | None:
        """Signed relative error of the energy, (predicted - published) / published."""
        if self.published_energy_mwh is None:
            return None
        return (self.predicted_energy_mwh - self.published_energy_mwh) / self.published_energy_mwh

    @property
    def tco2e_error(self) -> float:
        """Signed relative error of the tCO2e."""
        return (self.predicted_tco2e - self.published_tco2e) / self.published_tco2e


def footprint_rows(pue_scale: float = 1.0) -> list[FootprintComparison]:
    """Every row of training_footprints.csv with its prediction. ``pue_scale`` perturbs PUE (tests only)."""
    from simulator.core.resources import read_table

    out = []
    for r in read_table("training_footprints.csv"):
        energy, tco2e = predict_footprint(
            r["basis"],
            float(r["gpu_hours"]),
            float(r["power_w_per_gpu"]),
            float(r["pue"]) * pue_scale,
            float(r["grid_kg_per_kwh"]),
        )
        out.append(
            FootprintComparison(
                model=r["model"],
                basis=r["basis"],
                gpu=r["gpu"],
                gpu_hours=float(r["gpu_hours"]),
                published_energy_mwh=float(r["energy_mwh"]) if r["energy_mwh"].strip() else None,
                predicted_energy_mwh=energy,
                published_tco2e=float(r["tco2e"]),
                predicted_tco2e=tco2e,
                source=r["source"],
            )
        )
    return out


__all__ = [
    "FOOTPRINT_BASES",
    "POLICIES",
    "EmbodiedCarbon",
    "Footprint",
    "FootprintComparison",
    "GridIntensity",
    "IntensitySeries",
    "Policy",
    "Schedule",
    "compare_policies",
    "effective_kg_per_kwh",
    "embodied_estimate",
    "embodied_kgco2e",
    "footprint_rows",
    "grid_intensity",
    "job_footprint",
    "list_regions",
    "load_intensity_series",
    "operational_kgco2e",
    "predict_footprint",
    "schedule_job",
    "tdp_energy_mwh",
    "tdp_tco2e",
]
