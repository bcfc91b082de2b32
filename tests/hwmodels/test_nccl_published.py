"""Collective model vs published nccl-tests bus bandwidth (simulator/data/validation/nccl_published.csv).

Every row is predicted with ``auto`` (NCCL's tuner over algorithms x protocols), ``default`` (the fitted
rule the training validation uses) and, where the run forced ``NCCL_ALGO``, that algorithm; the error is
printed with its sign (+ = the model is faster than measured). Bounds are what the model reaches today,
measured, not hoped for; rows the thread itself calls under-performing (``use == flagged``) are printed only.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from hwmodels import collectives as C
from hwmodels.topology import ClusterSpec

CSV = Path(__file__).resolve().parents[2] / "simulator" / "data" / "validation" / "nccl_published.csv"
LARGE = 64e6  # bytes: the size class the default rule must keep


def load_rows() -> list[dict[str, str]]:
    """Rows of nccl_published.csv (comment lines skipped)."""
    with CSV.open() as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def measured_busbw_gbps(row: dict[str, str]) -> float:
    """The row's bus bandwidth; from its time where nccl-tests printed 0.00 (tiny messages)."""
    n, nbytes = int(row["num_gpus"]), float(row["bytes"])
    if row["time_us"] and (not row["busbw_gbps"] or float(row["busbw_gbps"]) < 1.0):
        return C.bus_bandwidth(row["collective"], nbytes, float(row["time_us"]) * 1e-6, n) / 1e9
    return float(row["busbw_gbps"])


def predict_busbw_gbps(row: dict[str, str], algorithm: str) -> float:
    """Predicted bus bandwidth of the row's collective under ``algorithm`` on its catalogue mapping."""
    spec = ClusterSpec(
        gpu=row["gpu"],
        node=row["node"],
        num_gpus=int(row["num_gpus"]),
        nics_per_node=int(row["nics_per_node"]) if row["nics_per_node"] else None,
        nic_link=row["nic_link"] or None,
    )
    cluster = spec.resolve()
    n, nbytes, kind = int(row["num_gpus"]), float(row["bytes"]), row["collective"]
    fn = getattr(C, f"{kind}_time")
    t = fn(nbytes, cluster.comm_group(n), algorithm, features=C.node_features(cluster))
    return C.bus_bandwidth(kind, nbytes, t, n) / 1e9


def size_class(nbytes: float) -> str:
    """small (< 64 KB), mid (< 64 MB) or large."""
    return "small" if nbytes < 64e3 else "mid" if nbytes < LARGE else "large"


def error_table(algorithms: tuple[str, ...] = ("auto", "default")) -> list[dict[str, object]]:
    """One entry per row: measured busbw and, per algorithm (plus the forced one), predicted and signed error."""
    out = []
    for row in load_rows():
        meas = measured_busbw_gbps(row)
        entry: dict[str, object] = {"row": row, "measured": meas, "class": size_class(float(row["bytes"]))}
        algs = (*algorithms, row["nccl_algo"]) if row["nccl_algo"] else algorithms
        for a in algs:
            pred = predict_busbw_gbps(row, a)
            entry[a] = (pred, pred / meas - 1.0)
        out.append(entry)
    return out


def _stats(errors: list[float]) -> tuple[float, float]:
    return sum(abs(e) for e in errors) / len(errors), sum(errors) / len(errors)


TABLE = error_table()
CHECKED = [e for e in TABLE if e["row"]["use"] == "check"]  # type: ignore[index]


def test_every_row_has_a_source_quote_and_a_catalogue_mapping() -> None:
    rows = load_rows()
    assert len(rows) >= 20 and len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["url"].startswith("https://") and len(r["quote"]) > 10, r["id"]
        assert r["use"] in ("check", "flagged", "scale") and r["kind"] in ("measured", "expected"), r["id"]
        assert r["collective"] in C.COLLECTIVE_KINDS and float(r["bytes"]) > 0, r["id"]
        assert r["nccl_algo"] in ("", "ring", "tree", "nvls"), r["id"]
    assert {int(r["num_gpus"]) for r in rows} >= {8, 16, 24, 32, 40, 96, 128, 256}


def test_print_predicted_vs_measured() -> None:
    assert TABLE and all(e["measured"] > 0 and e["auto"][0] > 0 and e["default"][0] > 0 for e in TABLE)
    print("\nid                              GPUs  bytes        meas   auto (err)        default (err)     forced")
    for e in TABLE:
        r = e["row"]
        forced = (
            f"{r['nccl_algo']}: {e[r['nccl_algo']][0]:7.1f} ({e[r['nccl_algo']][1]:+.0%})" if r["nccl_algo"] else ""
        )
        print(
            f"{r['id']:<31} {r['num_gpus']:>4}  {float(r['bytes']):<11.4g} {e['measured']:7.2f} "
            f"{e['auto'][0]:7.2f} ({e['auto'][1]:+5.0%})   {e['default'][0]:7.2f} ({e['default'][1]:+5.0%})   "
            f"{forced}{'  [flagged]' if r['use'] == 'flagged' else ''}"
        )
    for cls in ("small", "mid", "large"):
        rows = [e for e in CHECKED if e["class"] == cls]
        if rows:
            for a in ("auto", "default", "as run"):
                errs = [_forced_or_auto(e) for e in rows] if a == "as run" else [e[a][1] for e in rows]
                mape, mse = _stats(errs)
                print(f"{cls:>5} ({len(rows)} rows) {a:>7}: MAPE {mape:.0%}, mean signed error {mse:+.0%}")


def _forced_or_auto(e: dict[str, object]) -> float:
    """Signed error of what the run actually ran: the forced NCCL_ALGO where one was set, else auto."""
    r = e["row"]
    return e[r["nccl_algo"]][1] if r["nccl_algo"] else e["auto"][1]  # type: ignore[index]


def test_large_message_bus_bandwidth_within_measured_bound() -> None:
    large = [e for e in CHECKED if e["class"] == "large"]
    mape_auto, _ = _stats([_forced_or_auto(e) for e in large])
    mape_default, _ = _stats([e["default"][1] for e in large])
    print(f"\nlarge rows: auto/forced MAPE {mape_auto:.1%}, default MAPE {mape_default:.1%} over {len(large)} rows")
    assert mape_auto <= 0.20
    assert mape_default <= 0.20
    assert all(abs(_forced_or_auto(e)) <= 0.45 for e in large)  # worst rows: 2-node tree busbw above the NIC


def test_small_and_mid_message_rows_within_measured_bound() -> None:
    rest = [e for e in CHECKED if e["class"] != "large"]
    errs = [_forced_or_auto(e) for e in rest]
    shown = ", ".join(f"{e['row']['id']} {x:+.0%}" for e, x in zip(rest, errs, strict=True))
    print("\nsmall/mid rows (auto or forced):", shown)
    assert rest and all(abs(x) <= 0.35 for x in errs)


SCALE = [e for e in TABLE if e["row"]["use"] == "scale"]  # type: ignore[index]


def test_mid_size_all_reduce_at_scale_follows_the_protocol_aware_ring() -> None:
    """256 MiB - 1 GiB all-reduces on 32-256 H100 (AWS p5): busbw falls from ~275 to ~140 GB/s as the nodes grow
    from 4 to 32, which the protocol-aware ring's per-step network latency (2(n-1) steps, Simple) reproduces;
    ``default`` (the fitted envelope the training validation uses) and ``auto`` stay near the large-message
    bandwidth and over-predict up to 2x at 16-32 nodes: printed, the known gap at scale."""
    assert len(SCALE) >= 8
    print("\nid                  meas   ring (err)      auto (err)      default (err)")
    ring = []
    for e in SCALE:
        r = e["row"]
        pred = predict_busbw_gbps(r, "ring")  # type: ignore[arg-type]
        ring.append(pred / e["measured"] - 1.0)  # type: ignore[operator]
        print(
            f"{r['id']:<18} {e['measured']:6.1f} {pred:6.1f} ({ring[-1]:+4.0%})  "
            f"{e['auto'][0]:6.1f} ({e['auto'][1]:+4.0%})  {e['default'][0]:6.1f} ({e['default'][1]:+4.0%})"
        )
    mape, _ = _stats(ring)
    assert mape <= 0.15 and all(abs(x) <= 0.30 for x in ring)


def test_auto_is_no_worse_than_default_on_small_and_mid_rows() -> None:
    rest = [e for e in CHECKED if e["class"] != "large"]
    auto_mape, _ = _stats([_forced_or_auto(e) for e in rest])
    default_mape, _ = _stats([e["default"][1] for e in rest])
    assert auto_mape <= default_mape + 1e-9


# ---- protocol choice ----------------------------------------------------------------------------------


def _group(node: str, gpus: int):
    from hwmodels.catalogue import get_node

    cluster = ClusterSpec(gpu=get_node(node).gpu, num_gpus=gpus, node=node).resolve()
    return cluster.comm_group(gpus), C.node_features(cluster)


@pytest.mark.parametrize("node", ["dgx-a100", "dgx-h100"])
@pytest.mark.parametrize("gpus", [8, 64, 1024])
def test_ll_for_tiny_simple_for_huge(node: str, gpus: int) -> None:
    g, f = _group(node, gpus)
    assert C.choose_protocol("all_reduce", 8, g, "ring", features=f)[1] == "ll"
    assert C.choose_protocol("all_gather", 8, g, "ring", features=f)[1] == "ll"
    assert C.choose_protocol("all_reduce", 16e9, g, "ring", features=f)[1] == "simple"
    assert C.choose_protocol("all_gather", 16e9, g, "ring", features=f)[1] == "simple"
    assert C.choose_protocol("all_reduce", 16e9, g, "auto", features=f)[1] == "simple"
    algo, proto = C.choose_protocol("all_reduce", 8, g, "auto", features=f)
    assert (algo, proto) in {("ring", "ll"), ("tree", "ll"), ("nvls", "simple")}


def test_ll128_wins_in_between_on_nvlink() -> None:
    g, f = _group("dgx-a100", 8)
    picks = [C.choose_protocol("all_reduce", s, g, "ring", features=f)[1] for s in (8, 1e5, 4e6, 1e10)]
    assert picks == ["ll", "ll", "ll128", "simple"]


def test_protocol_crossover_follows_the_tuner_formula() -> None:
    """LL beats Simple exactly while its latency saving exceeds its bandwidth loss (4x slower wire)."""
    g, f = _group("dgx-a100", 8)
    ll = lambda s: C.all_reduce_time(s, g, "ring/ll")  # noqa: E731
    simple = lambda s: C.all_reduce_time(s, g, "ring/simple")  # noqa: E731
    # solve lat_ll + k s / (B/4) = lat_s + k s / B for s
    lat_ll, lat_s = ll(0.0 + 1e-9), simple(0.0 + 1e-9)
    k_over_b = simple(1e9) - simple(0.0 + 1e-9)
    crossover = (lat_s - lat_ll) / (3 * k_over_b / 1e9)
    assert ll(0.5 * crossover) < simple(0.5 * crossover) and ll(2 * crossover) > simple(2 * crossover)
    assert 1e5 < crossover < 1e7  # 1.8 MB on DGX A100; LL128 takes over well before (next test)


def test_forced_protocols_and_errors() -> None:
    g, f = _group("dgx-h100", 16)
    assert C.choose_protocol("all_reduce", 1e6, g, "ring/ll128", features=f) == ("ring", "ll128")
    assert C.choose_protocol("all_reduce", 1e6, g, "ring/fitted", features=f) == ("ring", "fitted")
    assert C.choose_protocol("all_reduce", 1e6, g, "default", features=f)[1] == "fitted"
    assert C.choose_protocol("all_gather", 1e6, g, "tree/ll", features=f) == ("ring", "ll")  # no tree AG in NCCL
    assert C.is_algorithm("ring/LL128") and C.is_algorithm("nvls/simple") and not C.is_algorithm("ring/ll256")
    with pytest.raises(C.ClusterSimError, match="nvls runs protocols fitted, simple, not 'll'"):
        C.all_reduce_time(1e6, g, "nvls/ll", features=f)
    with pytest.raises(C.ClusterSimError, match="ring/ll128"):
        C.all_reduce_time(1e6, g, "butterfly/ll")
    assert C.algorithm_names() == ("default", "auto", "ring", "tree", "hierarchical", "nvls")  # config's list


@pytest.mark.parametrize("node", ["dgx-a100", "dgx-h100", "hgx-h800"])
@pytest.mark.parametrize("gpus", [8, 16, 128, 1024])
@pytest.mark.parametrize("kind", C.COLLECTIVE_KINDS)
def test_protocols_leave_the_default_rule_unchanged_for_large_messages(node: str, gpus: int, kind: str) -> None:
    """``default`` keeps the fitted costs: exactly the faster of ring/fitted and tree/fitted at every size."""
    g, f = _group(node, gpus)
    fn = getattr(C, f"{kind}_time")
    tree = C.get_algorithm("tree").cost(kind, "fitted")
    for s in (64e6, 256e6, 1e9, 8e9):
        assert fn(s, g, features=f) == min(fn(s, g, "ring/fitted", features=f), C.BASE_LATENCY_S + tree(s, g))
        # and the protocol-aware ring is within 1% of the fitted one once Simple's latency is paid off
        if s >= 1e9 and gpus <= 16:
            assert math.isclose(fn(s, g, "ring", features=f), fn(s, g, "ring/fitted", features=f), rel_tol=0.01)
