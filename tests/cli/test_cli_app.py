"""`clustersim app`: runs `streamlit run` on the installed app/main.py with this Python."""

from __future__ import annotations

import sys

import pytest

from simulator.cli import app as app_cmd
from simulator.cli import main


def test_app_command_runs_streamlit_on_the_installed_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(app_cmd.os, "execv", lambda exe, cmd: calls.append(cmd))
    assert main(["app", "--port", "8599", "--headless"]) == 0
    (cmd,) = calls
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert cmd[4].endswith("app/main.py") and app_cmd.app_script().is_file()
    assert cmd[5:] == ["--server.port", "8599", "--server.headless", "true"]


def test_app_command_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(app_cmd.os, "execv", lambda exe, cmd: calls.append(cmd))
    assert main(["app"]) == 0  # the process becomes streamlit (execv), so its status is streamlit's own
    assert calls[0][5:] == ["--server.port", "8501"]
