"""`clustersim app`: runs `streamlit run` on the installed app/main.py with this Python."""

from __future__ import annotations

import subprocess
import sys

import pytest

from simulator.cli import commands as cli


def test_app_command_runs_streamlit_on_the_installed_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert cli.main(["app", "--port", "8599", "--headless"]) == 0
    (cmd,) = calls
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert cmd[4].endswith("app/main.py") and cli.app_script().is_file()
    assert cmd[5:] == ["--server.port", "8599", "--server.headless", "true"]


def test_app_command_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 3)
    assert cli.main(["app"]) == 3  # streamlit's exit status is passed through
    assert calls[0][5:] == ["--server.port", "8501"]
