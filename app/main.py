"""clustersim explorer: the Streamlit entry point (`clustersim app`, or `streamlit run app/main.py`).

Seven pages with stable URL paths: /training, /serving, /tradeoffs, /hardware, /power, /compression and
/claims. The root URL is a hidden page that forwards to /training (keeping the query string), because
Streamlit serves its default page at "/" only, and a link to /training must always work.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

HERE = Path(__file__).parent

st.set_page_config(layout="wide", page_title="clustersim")

#: url_path -> (file, title, icon); the URL paths are public (links, browser tests): keep them stable.
PAGE_SPECS = {
    "training": ("training.py", "Training planner", ":material/model_training:"),
    "serving": ("serving.py", "Serving planner", ":material/chat:"),
    "tradeoffs": ("tradeoffs.py", "Trade-off explorer", ":material/balance:"),
    "hardware": ("hardware.py", "Hardware", ":material/memory:"),
    "power": ("power.py", "Power & carbon", ":material/bolt:"),
    "compression": ("compression.py", "Gradient compression", ":material/compress:"),
    "claims": ("claims.py", "Claims", ":material/fact_check:"),
}
PAGES = {
    url: st.Page(HERE / "views" / file, title=title, url_path=url, icon=icon)
    for url, (file, title, icon) in PAGE_SPECS.items()
}


def _home() -> None:
    """Forward the root URL to the training planner, query string included."""
    st.switch_page(PAGES["training"], query_params=st.query_params.to_dict())


home = st.Page(_home, title="clustersim", url_path="home", default=True, visibility="hidden")
st.navigation([home, *PAGES.values()]).run()
