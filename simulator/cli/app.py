"""``clustersim app``: the Streamlit explorer, run with this Python so it sees the same installed packages."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from hwmodels.errors import ClusterSimError

__all__ = ["app_script", "cmd_app", "register"]


def app_script() -> Path:
    """Installed path of the Streamlit explorer's entry script (the repository's app/main.py, installed as
    simulator/app/main.py)."""
    return Path(str(resources.files("simulator.app").joinpath("main.py")))


def cmd_app(args: argparse.Namespace) -> int:
    """Start the Streamlit explorer with this Python, so it sees the same installed packages.

    The process replaces itself with ``python -m streamlit run`` (``os.execv``): signals sent to it reach
    the server, and nothing is left behind when it is killed."""
    script = app_script()
    if not script.is_file():
        raise ClusterSimError(f"the app is not installed ({script} is missing); reinstall clustersim")
    cmd = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(args.port)]
    if args.headless:
        cmd += ["--server.headless", "true"]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        # become the server (same PID), so killing `clustersim app` stops it: no orphan holding the port
        os.execv(sys.executable, cmd)
    except OSError as exc:
        raise ClusterSimError(f"cannot start streamlit with {sys.executable}: {exc.strerror or exc}") from None
    return 0  # pragma: no cover - execv does not return


def register(sub: Any) -> None:
    """Add ``app`` to the CLI's subcommands."""
    p = sub.add_parser(
        "app",
        help="open the Streamlit explorer (training, serving, trade-offs, compression, claims, power & carbon, "
        "hardware)",
        description="Run the Streamlit explorer: `streamlit run` on the installed app/main.py.",
    )
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.set_defaults(func=cmd_app)
