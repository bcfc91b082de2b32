"""Hardware page: the GPU catalogue with its sources, and a GPU's kernel-efficiency profile against
measured kernels where a measurement set ships (the H100 SXM set in calibration/data).

Run as a Streamlit page; importing it only defines the helpers.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st
from simulator.app import charts
from simulator.app.common import PAGE_PARAMS, drop_foreign_params, guarded, run_page
from simulator.app.plans import gemm_errors, load_measurements, to_yaml

from hwmodels.catalogue import list_gpus
from hwmodels.profile import Profile, load_profile

PARAM = PAGE_PARAMS["hardware"][0]
DEFAULT_GPU = "h100-sxm5-80gb"


@st.cache_data(show_spinner=False)
def catalogue_frame() -> pd.DataFrame:
    """One row per GPU: datasheet figures plus the citation of each."""
    rows = []
    for g in list_gpus():
        row = g.to_row()
        row["sources"] = "; ".join(f"{k}: {v}" for k, v in g.sources.items())
        rows.append(row)
    return pd.DataFrame(rows)


@st.cache_data(show_spinner=False)
def measurements_for(gpu_id: str) -> dict | None:
    """The shipped kernel measurements of ``gpu_id`` (None when there are none)."""
    return load_measurements(gpu_id)


def render() -> None:
    """The page: pick a GPU (kept in the URL), its datasheet and profile curves, then the whole catalogue."""
    st.title("Hardware")
    drop_foreign_params("hardware")
    gpu = _gpu_picker()
    spec = next(g for g in list_gpus() if g.id == gpu)
    profile = guarded(load_profile, gpu)
    cols = st.columns(5)
    cols[0].metric("bf16 dense peak", f"{spec.dense_tflops.bf16 or spec.dense_tflops.fp16 or 0:g} TFLOP/s")
    cols[1].metric("memory", f"{spec.memory_gb:g} GiB", help="marketed capacity: vendors' 'GB' here are GiB (2^30 B)")
    cols[2].metric("HBM bandwidth", f"{spec.memory_bandwidth_gbps:,.0f} GB/s")
    cols[3].metric("TDP", f"{spec.tdp_w:g} W")
    cols[4].metric("profile", profile.kind if profile else "-", help=profile.source if profile else None)

    measurements = guarded(measurements_for, gpu)
    if profile is not None:
        _show_profile(profile, measurements, gpu)

    st.subheader("GPU catalogue")
    frame = catalogue_frame()
    st.dataframe(frame, hide_index=True, column_config={"sources": st.column_config.TextColumn(width="large")})
    _hardware_downloads(gpu, frame, profile)


def _gpu_picker() -> str:
    """The GPU selectbox, seeded from the URL parameter (a warning if it is not in the catalogue); syncs the URL."""
    gpus = [g.id for g in list_gpus()]
    raw = st.query_params.get(PARAM)
    if raw and raw != st.session_state.get("_hw_url"):
        st.session_state["_hw_url"] = raw
        if raw in gpus:
            st.session_state["hw_gpu"] = raw
        else:
            st.warning(f"URL parameter {PARAM}={raw!r} is not a catalogue GPU; showing {DEFAULT_GPU}")
    if st.session_state.get("hw_gpu") not in gpus:
        st.session_state["hw_gpu"] = DEFAULT_GPU if DEFAULT_GPU in gpus else gpus[0]
    gpu = st.selectbox("GPU", gpus, key="hw_gpu")
    st.query_params[PARAM] = gpu
    st.session_state["_hw_url"] = gpu
    return gpu


def _show_profile(profile: Profile, measurements: dict | None, gpu: str) -> None:
    """GEMM efficiency chart against the measurements (with the fit's MAPE) and the profile's curve table."""
    st.plotly_chart(charts.efficiency_curves(profile, measurements), key="hw_eff")
    if measurements:
        errs = gemm_errors(profile, measurements)
        st.caption(
            "GEMM time error of this profile against the measurements (M >= 512): "
            + ", ".join(f"{d} {e:.1%} MAPE over {n} points" for d, (n, e) in errs.items())
            + f" - measured {measurements.get('meta', {}).get('time', '?')} on "
            f"{measurements.get('meta', {}).get('name', gpu)}."
        )
    else:
        st.info(f"No kernel measurements ship for {gpu}; `clustersim calibrate` on one measures them.")
    curves = pd.DataFrame([{"family": k, **c.model_dump()} for k, c in profile.curves.items()])
    st.subheader("Profile curves")
    st.dataframe(curves, hide_index=True)


def _hardware_downloads(gpu: str, frame: pd.DataFrame, profile: Profile | None) -> None:
    """Download buttons: the GPU as a config (YAML), the catalogue (CSV) and the GPU's profile (JSON)."""
    c1, c2, c3 = st.columns(3)
    with c1:
        st.download_button("download config (YAML)", to_yaml({"gpu": gpu}), file_name="hardware.yaml", key="dl_hw_cfg")
    with c2:
        st.download_button(
            "download catalogue (CSV)",
            frame.to_csv(index=False),
            file_name="gpus.csv",
            mime="text/csv",
            key="dl_hw_csv",
        )
    with c3:
        if profile is not None:
            st.download_button(
                "download profile (JSON)",
                profile.model_dump_json(indent=1),
                file_name=f"{gpu}-profile.json",
                mime="application/json",
                key="dl_hw_profile",
            )


if __name__ == "__main__":
    run_page(render)
