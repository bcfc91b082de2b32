"""MoE routing replay and expert placement: how many token copies each expert and EP rank gets.

Why this exists: an MoE layer takes as long as its busiest expert-parallel rank, and its all-to-all
moves as many bytes as its routing sends across nodes. Both depend on *which* experts tokens pick,
so the workload's balanced-routing assumption is replaced here by a routing source (uniform, Zipf
popularity, DeepSeek's group-limited routing, pooled routing, load-aware bias, or a recorded trace).

Model of a router: token ``t`` gives expert ``i`` the affinity ``w_i / X_ti`` with ``X_ti ~ Exp(1)``
(a softmax over Gumbel-perturbed logits ``log w_i``) and picks its ``top_k`` highest, i.e. top-k
sampling without replacement with weights ``w`` (Plackett-Luce). Where exact per-token routing
matters (group limits, pools, all-to-all dedup) a sample of up to ``MoERouting.sample_tokens``
tokens is routed explicitly with numpy, and counts are scaled to the real token count (see
:func:`expert_loads` for how the batch noise is kept right when scaling up).

Everything is pure numpy and deterministic: per-token noise comes from the ``rng`` the caller
passes (the run's one seeded Generator); the popularity order of experts (which expert is hot in
which layer and step) comes from ``seed_offset``, so it is a fixed property of the routing config.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hwmodels.errors import ClusterSimError, first_validation_error
from hwmodels.fileio import atomic_write, stat_regular_file
from simulator.core.limits import MAX_ROUTING_TRACE_BYTES
from simulator.core.untrusted import parse_json_text, read_text_file

TRACE_FORMAT = "clustersim-routing/1"
_DRIFT_BLOCK = 64  # steps of popularity drift drawn from one generator
_CHECKPOINT_STEPS = 256  # steps between memoised popularity orders (a multiple of _DRIFT_BLOCK)
_MIN_REL_WEIGHT = 1e-30  # keeps 1/w finite in float32 for very steep Zipf exponents
_RB_TOKENS = 1024  # tokens used to estimate expected loads when scaling a sample up
_REDRAWS = 16  # redraw rounds for repeated picks before drawing from the renormalised remainder


# ============================================================================ routing sources
class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class UniformRouting(_Frozen):
    """Each token picks ``top_k`` distinct experts uniformly at random (an ideally balanced router)."""

    kind: Literal["uniform"] = "uniform"


class ZipfRouting(_Frozen):
    """Skewed router: expert of popularity rank r has router weight ∝ 1/r^exponent.

    The weight is the Plackett-Luce weight of sampling without replacement, so with top_k > 1 the
    realised load shares are flatter than the weights (a token picks each expert at most once).
    ``layer_variation`` reshuffles the popularity order per layer (0: same hot experts in every
    layer, 1: independent); ``drift_per_step`` is the fraction of the order swapped per training step.
    """

    kind: Literal["zipf"] = "zipf"
    exponent: float = Field(ge=0)
    layer_variation: float = Field(default=0.0, ge=0, le=1)
    drift_per_step: float = Field(default=0.0, ge=0, le=1)


BaseSource = Annotated[UniformRouting | ZipfRouting, Field(discriminator="kind")]


class GroupLimitedRouting(_Frozen):
    """DeepSeek-V2 device-limited / V3 node-limited routing: top ``max_groups`` groups, then top_k inside.

    Experts are split into ``groups`` contiguous groups (a group = the experts of one device or node
    under contiguous placement). A group's score is its best expert affinity (``max``, V2) or the sum
    of its two best (``top2_sum``, V3); each token keeps its top ``max_groups`` groups and picks its
    top_k experts among theirs, which bounds how many devices/nodes a token is sent to.
    """

    kind: Literal["group_limited"] = "group_limited"
    groups: int = Field(gt=0)
    max_groups: int = Field(gt=0)
    group_score: Literal["max", "top2_sum"] = "top2_sum"
    base: BaseSource = UniformRouting()

    @model_validator(mode="after")
    def _check(self) -> GroupLimitedRouting:
        if self.max_groups > self.groups:
            raise ValueError(f"max_groups={self.max_groups} exceeds groups={self.groups}")
        return self


class HierarchicalRouting(_Frozen):
    """Two-level router: a global router picks ONE of ``pools`` contiguous expert pools per token
    (with probability = the pool's share of router weight), then top_k experts inside that pool."""

    kind: Literal["hierarchical"] = "hierarchical"
    pools: int = Field(gt=0)
    base: BaseSource = UniformRouting()


class LoadAwareRouting(_Frozen):
    """DeepSeek-V3 auxiliary-loss-free balancing: a per-expert bias added to the routing scores.

    The bias is updated ``rounds`` times from the expected loads of the previous steps' batches
    (step - rounds .. step - 1, so it lags popularity drift): b_i -= bias_strength * log(load_i / mean).
    The log-ratio update reaches V3's fixed point (equal loads) in a few rounds instead of V3's
    thousands of small sign steps; batch noise is not corrected (it averages out over steps).
    """

    kind: Literal["load_aware"] = "load_aware"
    bias_strength: float = Field(gt=0, le=1)
    rounds: int = Field(default=8, ge=1, le=1000)
    base: BaseSource = UniformRouting()


class TraceRouting(_Frozen):
    """Replay per-layer, per-step expert token counts recorded from a real router
    (``docs/routing-trace-format.md``); steps and layers beyond the trace cycle."""

    kind: Literal["trace"] = "trace"
    path: str


RoutingSource = Annotated[
    UniformRouting | ZipfRouting | GroupLimitedRouting | HierarchicalRouting | LoadAwareRouting | TraceRouting,
    Field(discriminator="kind"),
]


class MoERouting(_Frozen):
    """How tokens are routed to experts, and what the dispatcher does about overload.

    ``capacity_factor``: each expert takes at most ceil(cf * tokens * top_k / experts) token copies,
    the rest are dropped (GShard/Switch). ``replicate_hot_experts``: EPLB-style redundant experts,
    N extra replicas placed on the least-loaded EP ranks, splitting the load of the experts they copy.
    ``sample_tokens``: how many tokens are routed explicitly before scaling to the real count.
    """

    source: RoutingSource = UniformRouting()
    capacity_factor: float | None = Field(default=None, gt=0)
    replicate_hot_experts: int = Field(default=0, ge=0)
    seed_offset: int = Field(default=0, ge=0)
    sample_tokens: int = Field(default=4096, ge=16, le=1 << 20)


def validate_routing(data: dict[str, Any], where: str = "moe_routing") -> MoERouting:
    """Build a MoERouting from a mapping, turning validation errors into one-line ClusterSimErrors."""
    try:
        return MoERouting.model_validate(data)
    except ValidationError as err:
        raise ClusterSimError(f"{where}: {first_validation_error(err)}") from None


# ============================================================================ recorded traces
class TraceLayer(_Frozen):
    """One layer of one step: per-expert token counts, or per-token expert ids ([tokens][top_k])."""

    layer: int = Field(ge=0)
    expert_counts: list[int] | None = None
    assignments: list[list[int]] | None = None


class TraceStep(_Frozen):
    """The layers recorded at one training step."""

    step: int = Field(ge=0)
    layers: list[TraceLayer]


class RoutingTrace(_Frozen):
    """A recorded routing trace (format ``clustersim-routing/1``)."""

    format: Literal["clustersim-routing/1"]
    num_experts: int = Field(gt=0)
    top_k: int = Field(gt=0)
    layers: int = Field(gt=0)
    steps: list[TraceStep] = Field(min_length=1)
    source: str = ""


@dataclass(frozen=True, eq=False)
class _LoadedTrace:
    trace: RoutingTrace
    counts: dict[tuple[int, int], np.ndarray]  # (index into steps, layer) -> per-expert counts
    assignments: dict[tuple[int, int], np.ndarray]  # (index into steps, layer) -> [tokens, top_k]


def _check_trace_layer(entry: TraceLayer, e: int, k: int, L: int, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate one layer entry; return its counts (derived from assignments if needed) and assignments."""
    if entry.layer >= L:
        raise ClusterSimError(f"{where}: layer={entry.layer} is out of range for layers={L}; raise 'layers'")
    if (entry.expert_counts is None) == (entry.assignments is None):
        raise ClusterSimError(f"{where}: give exactly one of expert_counts or assignments")
    if entry.expert_counts is not None:
        counts = np.asarray(entry.expert_counts, dtype=np.int64)
        if counts.shape != (e,):
            raise ClusterSimError(f"{where}: expert_counts has {counts.size} entries, expected num_experts={e}")
        if (counts < 0).any():
            raise ClusterSimError(f"{where}: expert_counts has negative entries; counts must be >= 0")
        return counts, None
    assert entry.assignments is not None
    if not entry.assignments or any(len(row) != k for row in entry.assignments):
        raise ClusterSimError(f"{where}: assignments must be a non-empty [tokens][top_k={k}] list of expert ids")
    rows = np.asarray(entry.assignments, dtype=np.int64)
    if (rows < 0).any() or (rows >= e).any():
        raise ClusterSimError(f"{where}: assignments has expert ids outside 0..{e - 1}")
    srt = np.sort(rows, axis=1)
    if (srt[:, 1:] == srt[:, :-1]).any():
        raise ClusterSimError(f"{where}: assignments repeats an expert within a token; ids must be distinct")
    return np.bincount(rows.ravel(), minlength=e), rows


def parse_trace(data: Any, where: str = "trace") -> RoutingTrace:
    """Validate a trace document (already parsed JSON) with one-line errors that say what to fix."""
    return _parse(data, where).trace


def _parse(data: Any, where: str) -> _LoadedTrace:
    if not isinstance(data, dict):
        raise ClusterSimError(f"{where}: a routing trace must be a JSON object with format={TRACE_FORMAT!r}")
    fmt = data.get("format")
    if fmt != TRACE_FORMAT:
        raise ClusterSimError(
            f"{where}: format={fmt!r} is not {TRACE_FORMAT!r}; record traces with calibration/record_routing.py"
        )
    try:
        trace = RoutingTrace.model_validate(data)
    except ValidationError as err:
        raise ClusterSimError(f"{where}: {first_validation_error(err)}") from None
    return _index_trace(trace, where)


def _index_trace(trace: RoutingTrace, where: str) -> _LoadedTrace:
    e, k, n_layers = trace.num_experts, trace.top_k, trace.layers
    if k > e:
        raise ClusterSimError(f"{where}: top_k={k} exceeds num_experts={e}")
    counts: dict[tuple[int, int], np.ndarray] = {}
    assignments: dict[tuple[int, int], np.ndarray] = {}
    for i, st in enumerate(trace.steps):
        for entry in st.layers:
            here = f"{where}: step {st.step} layer {entry.layer}"
            if (i, entry.layer) in counts:
                raise ClusterSimError(f"{here}: layer recorded twice in one step; keep one entry")
            c, rows = _check_trace_layer(entry, e, k, n_layers, here)
            c.flags.writeable = False  # shared through the load cache
            if rows is not None:
                rows.flags.writeable = False
            counts[(i, entry.layer)] = c
            if rows is not None:
                assignments[(i, entry.layer)] = rows
    return _LoadedTrace(trace, counts, assignments)


def load_trace(path: str | Path) -> RoutingTrace:
    """Read and validate a routing trace file (``docs/routing-trace-format.md``)."""
    return _loaded_trace(path).trace


def _loaded_trace(path: str | Path) -> _LoadedTrace:
    """The parsed trace at ``path``: a regular file under MAX_ROUTING_TRACE_BYTES, checked before it is read
    (``/dev/zero``, a FIFO or a directory is refused from its metadata)."""
    p = Path(path)
    if not os.path.exists(p):  # False, not OSError, for a name too long for the filesystem
        raise ClusterSimError(f"routing trace {p} not found; record one with calibration/record_routing.py")
    st = stat_regular_file(p, MAX_ROUTING_TRACE_BYTES, f"routing trace {p}")
    return _load_trace_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _load_trace_cached(path: str, mtime_ns: int, size: int) -> _LoadedTrace:
    """Parse once per file version (the key carries mtime and size, so edits are picked up)."""
    where = f"routing trace {path}"
    data = parse_json_text(read_text_file(path, MAX_ROUTING_TRACE_BYTES, where), where)
    return _parse(data, where)


def _trace_entry(src: TraceRouting, e: int, k: int, layer: int, step: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Counts (and assignments, if recorded) for ``layer`` at ``step``, cycling steps and layers."""
    lt = _loaded_trace(src.path)
    tr = lt.trace
    if tr.num_experts != e or tr.top_k != k:
        raise ClusterSimError(
            f"routing trace {src.path} has num_experts={tr.num_experts}, top_k={tr.top_k}; "
            f"the model needs num_experts={e}, top_k={k}"
        )
    i, lay = step % len(tr.steps), layer % tr.layers
    if (i, lay) not in lt.counts:
        raise ClusterSimError(f"routing trace {src.path}: step {tr.steps[i].step} has no layer {lay}; record it")
    if lt.counts[(i, lay)].sum() == 0:
        raise ClusterSimError(f"routing trace {src.path}: step {tr.steps[i].step} layer {lay} routes no tokens")
    return lt.counts[(i, lay)], lt.assignments.get((i, lay))


# ============================================================================ popularity
def _seed(*parts: int) -> np.random.Generator:
    return np.random.default_rng([int(p) for p in parts])


@functools.lru_cache(maxsize=2048)
def _order_checkpoint(seed: int, e: int, layer: int, variation: float, drift: float, c: int) -> np.ndarray:
    """Popularity order (position r holds the expert of rank r+1) at step c * _CHECKPOINT_STEPS.

    Drift is a chain of swaps, so step s needs all steps before it; memoised checkpoints keep a
    warm query under _CHECKPOINT_STEPS steps of work (a cold one pays ~3 us per step once).
    """
    if c == 0:
        base_rank = np.empty(e)
        base_rank[_seed(seed, e, 0).permutation(e)] = np.arange(e)
        layer_rank = np.empty(e)
        layer_rank[_seed(seed, e, 1, layer).permutation(e)] = np.arange(e)
        order = np.argsort((1 - variation) * base_rank + variation * layer_rank, kind="stable")
    else:
        prev = _order_checkpoint(seed, e, layer, variation, drift, c - 1)
        order = _drift(prev, seed, layer, drift, (c - 1) * _CHECKPOINT_STEPS, _CHECKPOINT_STEPS)
    order.flags.writeable = False
    return order


def _drift(order: np.ndarray, seed: int, layer: int, drift: float, start: int, steps: int) -> np.ndarray:
    """Apply steps start .. start+steps-1 of drift (start on a block boundary): each step swaps
    about drift*E/2 disjoint pairs of positions, drawn per block of _DRIFT_BLOCK steps."""
    e = order.size
    out = order.copy()
    pairs = drift * e / 2
    whole = math.floor(pairs)
    for first in range(start, start + steps, _DRIFT_BLOCK):
        rng = _seed(seed, e, 2, layer, first // _DRIFT_BLOCK)
        extra = rng.random(_DRIFT_BLOCK) < pairs - whole
        picks = np.argsort(rng.random((_DRIFT_BLOCK, e)), axis=1)
        for s in range(min(_DRIFT_BLOCK, start + steps - first)):
            n = min(whole + int(extra[s]), e // 2)
            a, b = picks[s, :n], picks[s, n : 2 * n]
            out[a], out[b] = out[b], out[a].copy()
    return out


def _popularity_order(seed: int, e: int, layer: int, variation: float, drift: float, step: int) -> np.ndarray:
    if drift == 0:
        return _order_checkpoint(seed, e, layer, variation, 0.0, 0)
    c, rest = divmod(step, _CHECKPOINT_STEPS)
    for i in range(c + 1):  # fill the memo in order so no call recurses deeply
        order = _order_checkpoint(seed, e, layer, variation, drift, i)
    return _drift(order, seed, layer, drift, c * _CHECKPOINT_STEPS, rest) if rest else order


def _zipf_weights(src: ZipfRouting, e: int, layer: int, step: int, seed: int) -> np.ndarray:
    order = _popularity_order(seed, e, layer, src.layer_variation, src.drift_per_step, step)
    w = np.empty(e)
    w[order] = np.arange(1, e + 1, dtype=float) ** -src.exponent
    return w / w.sum()


def _base_weights(src: UniformRouting | ZipfRouting, e: int, layer: int, step: int, seed: int) -> np.ndarray:
    if isinstance(src, ZipfRouting):
        return _zipf_weights(src, e, layer, step, seed)
    return np.full(e, 1.0 / e)


def inclusion_probabilities(weights: np.ndarray, top_k: int) -> np.ndarray:
    """Approximate P(expert i is in a token's top_k) under Plackett-Luce sampling with ``weights``.

    Poissonised exponential race: solve sum_j (1 - exp(-w_j t)) = k for t, then pi_i = 1 - exp(-w_i t).
    Within a few percent of the exact value and sums to k exactly; used by the load-aware controller.
    """
    w = np.asarray(weights, dtype=float)
    live = np.count_nonzero(w)
    if top_k >= live:  # every weighted expert is always picked; the rest fill up uniformly
        return np.where(w > 0, 1.0, (top_k - live) / max(1, w.size - live))
    w = w / w.sum()
    t = 0.0  # f(t) is increasing and concave, so Newton from 0 converges monotonically from below
    for _ in range(200):
        ex = np.exp(-w * t)
        step = ((1 - ex).sum() - top_k) / (w * ex).sum()
        t -= step
        if abs(step) <= 1e-13 * max(1.0, t):
            break
    return -np.expm1(-w * t)


@functools.lru_cache(maxsize=1024)
def _router_weights(src: Any, e: int, k: int, layer: int, step: int, seed: int) -> np.ndarray:
    """Plackett-Luce weights of a plain (uniform/zipf/load-aware) router at (layer, step), summing to 1."""
    if isinstance(src, LoadAwareRouting):
        bias = np.zeros(e)
        for j in range(src.rounds):
            prev = _base_weights(src.base, e, layer, max(0, step - src.rounds + j), seed) * np.exp(bias)
            mu = np.maximum(inclusion_probabilities(prev, k), 1e-300)
            bias -= src.bias_strength * np.log(mu / mu.mean())
            bias -= bias.max()
        w = _base_weights(src.base, e, layer, step, seed) * np.exp(bias)
    else:
        w = _base_weights(src, e, layer, step, seed)
    w = w / w.sum()
    w.flags.writeable = False
    return w


# ============================================================================ per-token sampling
def _pl_sample(
    w: np.ndarray, k: int, m: int, rng: np.random.Generator, pool: np.ndarray | None = None, n_pools: int = 1
) -> np.ndarray:
    """Plackett-Luce top-k for ``m`` tokens: [m, k] expert ids (the router model of this module).

    Picks are drawn one at a time in proportion to ``w`` and repeats are redrawn, which is exactly
    sampling without replacement (each pick is proportional to w among the experts not yet picked)
    and ~10x cheaper than partitioning an [m, E] matrix of perturbed scores. ``pool`` restricts
    token t to expert pool pool[t] of ``n_pools`` equal contiguous pools.
    """
    e = w.size
    size = e // n_pools
    wp = w.reshape(n_pools, size) / w.reshape(n_pools, size).sum(axis=1, keepdims=True)
    if 2 * k > size:  # most of a pool is picked: redraws would dominate, race the pool's experts instead
        rows = wp[np.zeros(m, dtype=np.int64) if pool is None else pool]
        keys, _ = _race_keys(rows, (m, size), rng)
        pos = (np.flatnonzero(_topk(keys, k).mask) % size).reshape(m, k)
        return pos if pool is None else pos + (pool * size)[:, None]
    cum = np.cumsum(wp, axis=1)
    cum[:, -1] = 1.0  # no rounding gap at a pool's end for a draw to fall through into the next pool
    cdf = (cum + np.arange(n_pools)[:, None]).ravel()  # pool g spans [g, g + 1)
    base = np.zeros(m) if pool is None else pool.astype(float)
    out = np.empty((m, k), dtype=np.int64)
    for j in range(k):
        todo = np.arange(m)
        for _ in range(_REDRAWS):
            draw = np.minimum(np.searchsorted(cdf, base[todo] + rng.random(todo.size), side="right"), e - 1)
            dup = (out[todo, :j] == draw[:, None]).any(axis=1)
            out[todo[~dup], j] = draw[~dup]
            todo = todo[dup]
            if not todo.size:
                break
        if todo.size:  # steep weights: draw the rest from the renormalised remainder directly
            out[todo, j] = _draw_remaining(w, size, out[todo, :j], base[todo].astype(np.int64), rng)
    return out


def _draw_remaining(
    w: np.ndarray, size: int, picked: np.ndarray, pool: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One pick per row in proportion to ``w`` over the row's pool, excluding ``picked`` (uniform if no mass)."""
    e = w.size
    in_pool = (np.arange(e)[None, :] // size) == pool[:, None]
    ww = np.where(in_pool, w[None, :], 0.0)
    np.put_along_axis(ww, picked, 0.0, axis=1)
    empty = ww.sum(axis=1) <= 0
    if empty.any():
        free = in_pool[empty].astype(float)
        np.put_along_axis(free, picked[empty], 0.0, axis=1)
        ww[empty] = free
    c = ww.cumsum(axis=1)
    u = rng.random(len(pool)) * c[:, -1]
    return np.minimum((c <= u[:, None]).sum(axis=1), e - 1)


def _race_keys(w: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Exponential-race keys Exp(1)/w_rel (the k smallest win), float32, with w_rel (max 1).

    -log(U) in place (float32 log is SIMD; log1p is not). U = 0 (p = 2^-24) gives an infinite key:
    that token skips that expert, a negligible distortion.
    """
    w_rel = np.maximum(w / w.max(axis=-1, keepdims=True), _MIN_REL_WEIGHT).astype(np.float32)
    keys = rng.random(shape, dtype=np.float32)
    with np.errstate(divide="ignore"):
        np.log(keys, out=keys)
    if np.ptp(w_rel) == 0:
        return np.negative(keys, out=keys), w_rel
    keys /= -w_rel
    return keys, w_rel


@dataclass(frozen=True, eq=False)
class _TopK:
    mask: np.ndarray  # [..., n] bool, exactly k True per row: the k smallest keys
    kth: np.ndarray | None  # [..., 1] k-th smallest key per row (None when k == n)
    nxt: np.ndarray | None  # [..., 1] (k+1)-th smallest key per row


def _topk(keys: np.ndarray, k: int) -> _TopK:
    """The k smallest keys of each row via one partition (row-wise argpartition is ~5x slower)."""
    n = keys.shape[-1]
    if k >= n:
        return _TopK(np.ones(keys.shape, dtype=bool), None, None)
    part = np.partition(keys, k, axis=-1)
    kth = part[..., :k].max(axis=-1, keepdims=True)
    mask = keys <= kth
    bad = mask.sum(axis=-1) != k
    if bad.any():  # ties at the k-th key (float32): break them by position
        idx = np.argpartition(keys[bad], k - 1, axis=-1)[..., :k]
        fixed = np.zeros(idx.shape[:-1] + (n,), dtype=bool)
        np.put_along_axis(fixed, idx, True, axis=-1)
        mask[bad] = fixed
    return _TopK(mask, kth, part[..., k : k + 1])


def _expected_copies(w: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Expected copies per token of each expert (P(in top_k)) under Plackett-Luce with weights ``w``.

    Rao-Blackwellised race over _RB_TOKENS tokens: given the other experts' keys, expert i is picked
    iff its key beats the k-th smallest of the others (kappa), with probability 1 - exp(-w_i kappa).
    Unbiased and low-noise, so scaling a sample up keeps the batch noise right. ``w`` may be [pools, n].
    """
    if k >= w.shape[-1]:
        return np.ones(w.shape)
    keys, w_rel = _race_keys(w, (_RB_TOKENS, *w.shape), rng)
    top = _topk(keys, k)
    assert top.kth is not None and top.nxt is not None
    kappa = np.where(top.mask, top.nxt, top.kth)
    kappa *= -w_rel
    np.exp(kappa, out=kappa)
    return 1.0 - kappa.sum(axis=0, dtype=float) / _RB_TOKENS


@dataclass(frozen=True, eq=False)
class _Sample:
    """Explicit routing of a sample of tokens, as expert ids or a mask, plus expected copies if known."""

    num_experts: int
    experts: np.ndarray | None = None  # [m, k] expert ids
    mask: np.ndarray | None = None  # [m, E] bool, k True per row
    mean: np.ndarray | None = None  # expected copies per token per expert (sums to k); None: use the sample

    @property
    def tokens(self) -> int:
        return int((self.experts if self.experts is not None else self.mask).shape[0])  # type: ignore[union-attr]

    def counts(self) -> np.ndarray:
        if self.experts is not None:
            return np.bincount(self.experts.ravel(), minlength=self.num_experts)
        assert self.mask is not None
        return self.mask.sum(axis=0)

    def expert_ids(self) -> np.ndarray:
        if self.experts is not None:
            return np.sort(self.experts, axis=1)
        assert self.mask is not None
        return (np.flatnonzero(self.mask) % self.num_experts).reshape(self.mask.shape[0], -1)

    def rank_copies(self, ep: int) -> np.ndarray:
        """[m, ep] copies of each token bound for each rank (contiguous placement)."""
        per = self.num_experts // ep
        if self.mask is not None:
            return self.mask.reshape(self.tokens, ep, per).sum(axis=2)
        assert self.experts is not None
        m = self.tokens
        flat = (np.arange(m)[:, None] * ep + self.experts // per).ravel()
        return np.bincount(flat, minlength=m * ep).reshape(m, ep)


def _sample_plain(w: np.ndarray, k: int, m: int, rng: np.random.Generator, want_mean: bool) -> _Sample:
    e = w.size
    mean = None
    if want_mean:
        mean = np.full(e, k / e) if np.ptp(w) == 0 else _expected_copies(w, k, rng)
    return _Sample(e, experts=_pl_sample(w, k, m, rng), mean=mean)


def _sample_grouped(src: GroupLimitedRouting, w: np.ndarray, k: int, m: int, rng: np.random.Generator) -> _Sample:
    """Per-token scores for all experts are needed to rank groups, so this one races an [m, E] matrix."""
    e, g = w.size, src.groups
    size = e // g
    if src.group_score == "max" and np.ptp(w) == 0:  # only the order matters: -U ranks like -log(U)
        keys = np.negative(rng.random((m, e), dtype=np.float32))
    else:
        keys, _ = _race_keys(w, (m, e), rng)
    grouped = keys.reshape(m, g, size)
    if src.group_score == "max" or size == 1:
        gkey = grouped.min(axis=2)  # best affinity 1/key <=> smallest key
    else:
        best2 = np.partition(grouped, 1, axis=2)[:, :, :2]
        gkey = -(1.0 / best2).sum(axis=2)
    gmask = _topk(gkey, src.max_groups).mask
    chosen = (np.flatnonzero(gmask) % g).reshape(m, src.max_groups)  # ascending per token, as grouped[gmask]
    inside = grouped[gmask].reshape(m, -1)  # the chosen groups' keys
    pos = (np.flatnonzero(_topk(inside, k).mask) % inside.shape[1]).reshape(m, k)
    experts = np.take_along_axis(chosen, pos // size, axis=1) * size + pos % size
    return _Sample(e, experts=experts)


def _sample_pooled(
    src: HierarchicalRouting, w: np.ndarray, k: int, m: int, rng: np.random.Generator, want_mean: bool
) -> _Sample:
    e, p = w.size, src.pools
    wp = w.reshape(p, e // p)
    q = wp.sum(axis=1) / wp.sum()
    pool = rng.choice(p, size=m, p=q)
    mean = (q[:, None] * _expected_copies(wp / wp.sum(axis=1, keepdims=True), k, rng)).ravel() if want_mean else None
    return _Sample(e, experts=_pl_sample(w, k, m, rng, pool=pool, n_pools=p), mean=mean)


def _sample_trace(
    src: TraceRouting, e: int, k: int, m: int, layer: int, step: int, rng: np.random.Generator
) -> _Sample:
    counts, rows = _trace_entry(src, e, k, layer, step)
    mean = counts * (k / counts.sum())
    if rows is not None:
        pick = rows if m == rows.shape[0] else rows[rng.integers(0, rows.shape[0], size=m)]
        return _Sample(e, experts=pick, mean=mean)
    # counts only: synthesise tokens whose (Poissonised) inclusion probabilities match the counts
    w = -np.log1p(-np.clip(mean, 0.0, 1.0 - 1e-9))
    return _Sample(e, experts=_pl_sample(w / w.sum(), k, m, rng), mean=mean)


def _check_shape(src: Any, e: int, k: int) -> None:
    if isinstance(src, GroupLimitedRouting):
        if e % src.groups:
            raise ClusterSimError(f"group_limited groups={src.groups} does not divide num_experts={e}")
        if k > src.max_groups * (e // src.groups):
            raise ClusterSimError(
                f"top_k={k} exceeds max_groups*experts_per_group={src.max_groups}*{e // src.groups}; raise max_groups"
            )
    elif isinstance(src, HierarchicalRouting):
        if e % src.pools:
            raise ClusterSimError(f"hierarchical pools={src.pools} does not divide num_experts={e}")
        if k > e // src.pools:
            raise ClusterSimError(f"top_k={k} exceeds the {e // src.pools} experts of one pool; use fewer pools")


def _check_args(num_experts: int, top_k: int, tokens: int, layer: int, step: int) -> None:
    if num_experts <= 0 or top_k <= 0 or top_k > num_experts:
        raise ClusterSimError(f"num_experts={num_experts}, top_k={top_k}: need 1 <= top_k <= num_experts")
    if tokens < 0 or layer < 0 or step < 0:
        raise ClusterSimError(f"tokens={tokens}, layer={layer}, step={step} must be >= 0")


def _sample(
    routing: MoERouting, e: int, k: int, m: int, layer: int, step: int, rng: np.random.Generator, want_mean: bool
) -> _Sample:
    src = routing.source
    _check_shape(src, e, k)
    if isinstance(src, TraceRouting):
        return _sample_trace(src, e, k, m, layer, step, rng)
    if isinstance(src, GroupLimitedRouting):
        return _sample_grouped(src, _router_weights(src.base, e, k, layer, step, routing.seed_offset), k, m, rng)
    if isinstance(src, HierarchicalRouting):
        w = _router_weights(src.base, e, k, layer, step, routing.seed_offset)
        return _sample_pooled(src, w, k, m, rng, want_mean)
    return _sample_plain(_router_weights(src, e, k, layer, step, routing.seed_offset), k, m, rng, want_mean)


def route_tokens(
    routing: MoERouting,
    num_experts: int,
    top_k: int,
    tokens: int,
    *,
    layer: int = 0,
    step: int = 0,
    rng: np.random.Generator,
) -> np.ndarray:
    """Explicit per-token routing of min(tokens, sample_tokens) tokens: [tokens, top_k] expert ids (sorted)."""
    _check_args(num_experts, top_k, tokens, layer, step)
    m = min(tokens, routing.sample_tokens)
    return _sample(routing, num_experts, top_k, m, layer, step, rng, want_mean=False).expert_ids()


# ============================================================================ loads
def _round_to_total(x: np.ndarray, total: int, upper: int) -> np.ndarray:
    """Integers within [0, upper] summing to ``total``, closest to ``x`` (largest remainder)."""
    x = np.clip(np.asarray(x, dtype=float), 0.0, None)
    x = x * (total / x.sum()) if x.sum() > 0 else np.full(x.size, total / x.size)
    for _ in range(x.size):  # move any excess above ``upper`` onto the others, proportionally
        over = x > upper
        excess = (x[over] - upper).sum()
        if excess <= 1e-9:
            break
        x[over] = upper
        room = ~over & (x < upper)
        x[room] += excess * x[room] / x[room].sum() if x[room].sum() > 0 else excess / room.sum()
    out = np.minimum(np.floor(x + 1e-9), upper).astype(np.int64)
    short = total - int(out.sum())
    if short > 0:
        frac = np.where(out < upper, x - out, -np.inf)
        out[np.argsort(-frac, kind="stable")[:short]] += 1
    return out


def expert_loads(
    routing: MoERouting,
    num_experts: int,
    top_k: int,
    tokens: int,
    *,
    layer: int = 0,
    step: int = 0,
    rng: np.random.Generator,
) -> np.ndarray:
    """Token copies each expert receives when ``tokens`` tokens are routed (sum = tokens*top_k - drops).

    Up to ``sample_tokens`` tokens are routed exactly. Beyond that, loads = n*mu + sqrt(n/m)*(c - m*mu)
    with mu the expected copies per token (exact for uniform, a Rao-Blackwell estimate for Zipf,
    pooled and load-aware routers) and c the sample's counts, so the batch noise shrinks as
    1/sqrt(n) as it does in reality. Group-limited routers have no cheap mu: their sample is scaled
    (its noise then overstates a big batch's). Traces are replayed, scaled to ``tokens``.
    """
    _check_args(num_experts, top_k, tokens, layer, step)
    total = tokens * top_k
    if tokens == 0:
        return np.zeros(num_experts, dtype=np.int64)
    src = routing.source
    if isinstance(src, TraceRouting):
        counts, _ = _trace_entry(src, num_experts, top_k, layer, step)
        loads = _round_to_total(counts.astype(float), total, tokens)
    else:
        m = min(tokens, routing.sample_tokens)
        s = _sample(routing, num_experts, top_k, m, layer, step, rng, want_mean=tokens > m)
        c = s.counts().astype(float)
        if tokens == m:
            loads = c.astype(np.int64)
        elif s.mean is None:
            loads = _round_to_total(c * (tokens / m), total, tokens)
        else:
            mu = s.mean * (top_k / s.mean.sum())
            loads = _round_to_total(tokens * mu + math.sqrt(tokens / m) * (c - m * mu), total, tokens)
    if routing.capacity_factor is not None:
        loads = np.minimum(loads, capacity(routing.capacity_factor, tokens, top_k, num_experts))
    return loads


def capacity(capacity_factor: float, tokens: int, top_k: int, num_experts: int) -> int:
    """Per-expert capacity ceil(cf * tokens * top_k / experts): copies beyond it are dropped."""
    return math.ceil(capacity_factor * tokens * top_k / num_experts)


# ============================================================================ placement & stats
@dataclass(frozen=True, eq=False)
class RoutingStats:
    """Loads of one MoE layer per expert and per EP rank (contiguous placement plus replicas)."""

    expert_loads: np.ndarray  # token copies per logical expert, after drops
    rank_loads: np.ndarray  # token copies per EP rank; a replicated expert's load is split evenly
    replicas: np.ndarray  # instances of each expert (1 + redundant replicas)
    dropped_fraction: float

    @property
    def ep(self) -> int:
        """Expert-parallel ranks the experts are spread over."""
        return int(self.rank_loads.size)

    @property
    def rank_max_over_mean(self) -> float:
        """Busiest rank's load over the mean: what stretches the layer's expert compute."""
        mean = float(self.rank_loads.mean())
        return float(self.rank_loads.max()) / mean if mean > 0 else 1.0

    @property
    def expert_max_over_mean(self) -> float:
        """Hottest expert's load over the mean expert load."""
        mean = float(self.expert_loads.mean())
        return float(self.expert_loads.max()) / mean if mean > 0 else 1.0

    @property
    def expert_utilisation(self) -> float:
        """Mean over max per-expert load (1 = perfectly balanced experts)."""
        return 1.0 / self.expert_max_over_mean

    def to_dict(self) -> dict[str, Any]:
        """Headline numbers as plain Python values (for JSON and tables)."""
        return {
            "ep": self.ep,
            "rank_max_over_mean": self.rank_max_over_mean,
            "expert_max_over_mean": self.expert_max_over_mean,
            "expert_utilisation": self.expert_utilisation,
            "dropped_fraction": self.dropped_fraction,
            "redundant_replicas": int(self.replicas.sum() - self.replicas.size),
            "rank_loads": self.rank_loads.tolist(),
        }


def _experts_per_rank(num_experts: int, ep: int) -> int:
    if ep <= 0 or num_experts % ep:
        raise ClusterSimError(f"ep={ep} must divide num_experts={num_experts} (experts are placed contiguously)")
    return num_experts // ep


def _replicate(loads: np.ndarray, ep: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """EPLB-style redundant experts: each of ``n`` replicas copies the expert with the highest load per
    replica onto the least-loaded rank that lacks it; an expert's load is split evenly over its copies."""
    e = loads.size
    per = e // ep
    hosts = [[i // per] for i in range(e)]
    replicas = np.ones(e, dtype=np.int64)
    load = loads.astype(float)

    def rank_loads() -> np.ndarray:
        out = np.zeros(ep)
        for i in range(e):
            out[hosts[i]] += load[i] / replicas[i]
        return out

    for _ in range(n):
        i = int(np.argmax(load / replicas))
        if load[i] == 0 or replicas[i] >= ep:
            break
        current = rank_loads()
        current[hosts[i]] = np.inf
        hosts[i].append(int(np.argmin(current)))
        replicas[i] += 1
    return rank_loads(), replicas


def routing_stats(
    loads: np.ndarray, ep: int, *, routed: int | None = None, replicate_hot_experts: int = 0
) -> RoutingStats:
    """Per-rank and per-expert balance of one layer's ``loads`` with expert e on rank e // (E/ep).

    ``routed`` is tokens*top_k before capacity drops (the dropped fraction is 1 - sum(loads)/routed);
    ``replicate_hot_experts`` adds EPLB redundant replicas before the per-rank loads are taken.
    """
    loads = np.asarray(loads)
    if loads.ndim != 1 or (loads < 0).any():
        raise ClusterSimError("loads must be a 1-D array of non-negative per-expert token counts")
    per = _experts_per_rank(loads.size, ep)
    if replicate_hot_experts < 0:
        raise ClusterSimError(f"replicate_hot_experts={replicate_hot_experts} must be >= 0")
    if replicate_hot_experts:
        rank, replicas = _replicate(loads, ep, replicate_hot_experts)
    else:
        rank, replicas = loads.reshape(ep, per).sum(axis=1).astype(float), np.ones(loads.size, dtype=np.int64)
    got = float(loads.sum())
    if routed is not None and routed < got:
        raise ClusterSimError(f"routed={routed} is less than the {int(got)} token copies in loads")
    dropped = 1.0 - got / routed if routed else 0.0
    return RoutingStats(loads.copy(), rank, replicas, dropped)


def layer_stats(
    routing: MoERouting,
    num_experts: int,
    top_k: int,
    tokens: int,
    *,
    ep: int,
    layer: int = 0,
    step: int = 0,
    rng: np.random.Generator,
) -> RoutingStats:
    """Route ``tokens`` tokens through one MoE layer and place them on ``ep`` ranks (capacity and
    replication from ``routing``): what the engine needs for one layer and step."""
    loads = expert_loads(routing, num_experts, top_k, tokens, layer=layer, step=step, rng=rng)
    return routing_stats(loads, ep, routed=tokens * top_k, replicate_hot_experts=routing.replicate_hot_experts)


def layer_time_factor(stats: RoutingStats) -> float:
    """Multiplier on an MoE layer's expert compute time: the busiest rank decides (max/mean rank load)."""
    return stats.rank_max_over_mean


# ============================================================================ all-to-all bytes
@dataclass(frozen=True, eq=False)
class A2ABytes:
    """Dispatch bytes each EP rank sends in one MoE all-to-all (combine sends the same back).

    Counted per (token, expert) copy, as Megatron's all-to-all dispatcher sends them; copies for
    experts on the sending rank stay local. ``inter_node_dedup_bytes`` is DeepSeek-V3's scheme: a
    token crosses the network once per destination node and is forwarded over NVLink there
    (``forwarded_bytes``, charged to the token's source rank).
    """

    local_bytes: np.ndarray
    intra_node_bytes: np.ndarray
    inter_node_bytes: np.ndarray
    inter_node_dedup_bytes: np.ndarray
    forwarded_bytes: np.ndarray

    def to_dict(self) -> dict[str, float]:
        """Mean and max over ranks of each kind of traffic, in bytes."""
        out: dict[str, float] = {}
        for name in ("local", "intra_node", "inter_node", "inter_node_dedup", "forwarded"):
            arr = getattr(self, f"{name}_bytes")
            out[f"{name}_bytes_mean"] = float(arr.mean())
            out[f"{name}_bytes_max"] = float(arr.max())
        return out


def a2a_bytes_per_rank(
    routing: MoERouting | np.ndarray,
    *,
    num_experts: int,
    top_k: int | None = None,
    tokens_per_rank: int,
    hidden: int,
    bytes_per_elem: float,
    ep: int,
    ranks_per_node: int,
    layer: int = 0,
    step: int = 0,
    rng: np.random.Generator | None = None,
) -> A2ABytes:
    """Expert-parallel dispatch bytes per rank, split local / intra-node / inter-node (naive and node-dedup).

    ``routing`` is a MoERouting (a sample of tokens is routed with ``rng``; needs ``top_k``) or an
    explicit [tokens, top_k] array of expert ids, where token i is held by rank i * ep // tokens.
    Each rank holds ``tokens_per_rank`` tokens (its sample is scaled to that); ranks r*ranks_per_node
    .. (r+1)*ranks_per_node - 1 share a node, and expert e lives on rank e // (num_experts / ep).
    """
    _experts_per_rank(num_experts, ep)
    if ranks_per_node <= 0 or (ep > ranks_per_node and ep % ranks_per_node):
        raise ClusterSimError(f"ranks_per_node={ranks_per_node} must divide ep={ep} (or exceed it)")
    if tokens_per_rank < 0 or hidden <= 0 or bytes_per_elem <= 0:
        raise ClusterSimError("tokens_per_rank must be >= 0; hidden and bytes_per_elem must be positive")
    if isinstance(routing, MoERouting):
        if top_k is None or rng is None:
            raise ClusterSimError("a2a_bytes_per_rank with a MoERouting needs top_k and rng")
        _check_args(num_experts, top_k, tokens_per_rank, layer, step)
        m_per = max(1, min(tokens_per_rank, routing.sample_tokens // ep))
        sample = _sample(routing, num_experts, top_k, m_per * ep, layer, step, rng, want_mean=False)
    else:
        rows = np.asarray(routing)
        if rows.ndim != 2 or rows.shape[0] < ep or (rows < 0).any() or (rows >= num_experts).any():
            raise ClusterSimError(
                f"assignments must be a [tokens >= ep={ep}, top_k] array of expert ids in 0..{num_experts - 1}"
            )
        sample = _Sample(num_experts, experts=rows.astype(np.int64))
    return _a2a(sample.rank_copies(ep), ep, ranks_per_node, tokens_per_rank * hidden * bytes_per_elem)


def _a2a(copies: np.ndarray, ep: int, rpn: int, bytes_per_rank: float) -> A2ABytes:
    """Per-rank traffic from ``copies`` [tokens, dest rank]; token i is held by rank i * ep // tokens."""
    m = copies.shape[0]
    rpn = min(rpn, ep)
    nodes = ep // rpn
    src = np.arange(m) * ep // m
    rows = np.arange(m)
    local = copies[rows, src]
    by_node = copies.reshape(m, nodes, rpn)
    own = src // rpn
    same_node = by_node[rows, own].sum(axis=1)
    intra = same_node - local
    inter = copies.sum(axis=1) - same_node
    reach = by_node.sum(axis=2) > 0
    reach[rows, own] = False
    dedup = reach.sum(axis=1)
    rail = by_node[rows[:, None], np.arange(nodes)[None, :], (src % rpn)[:, None]]  # copies on the rail peer
    forwarded = np.where(reach, by_node.sum(axis=2) - rail, 0).sum(axis=1)
    held = np.bincount(src, minlength=ep)
    scale = bytes_per_rank / held

    def per_rank(x: np.ndarray) -> np.ndarray:
        return np.bincount(src, weights=x.astype(float), minlength=ep) * scale

    return A2ABytes(per_rank(local), per_rank(intra), per_rank(inter), per_rank(dedup), per_rank(forwarded))


def dumps_trace(doc: dict[str, Any]) -> str:
    """A trace document as JSON with one layer per line: compact, yet readable and diffable."""
    head = {key: value for key, value in doc.items() if key != "steps"}
    lines = ["{" + json.dumps(head)[1:-1] + ', "steps": [']
    for i, st in enumerate(doc.get("steps", [])):
        layers = ",\n".join("    " + json.dumps(entry, separators=(",", ":")) for entry in st["layers"])
        tail = "," if i < len(doc["steps"]) - 1 else ""
        lines.append(f'  {{"step": {st["step"]}, "layers": [\n{layers}\n  ]}}{tail}')
    lines.append("]}")
    return "\n".join(lines) + "\n"


def write_trace(doc: dict[str, Any], path: str | Path) -> Path:
    """Validate ``doc`` and write it atomically (temp file, then rename) so readers never see half a trace."""
    parse_trace(doc, where=str(path))
    return atomic_write(path, dumps_trace(doc))
