"""What `pip install .` gives a user: every package listed, the demo pairs as package data, the
app's pages, and commands that name the extra to install when an optional dependency is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import setuptools

from mtz_core.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_of_the_tree_is_listed():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = setuptools.find_packages(str(ROOT), include=["mtz_core*", "explorer*"])
    assert set(found) <= set(listed), sorted(set(found) - set(listed))
    assert "mtz_assets" in listed


@pytest.mark.slow
def test_a_wheel_ships_the_demos_and_the_app(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and egg-info next to the code
    skip = shutil.ignore_patterns(
        ".venv", ".git", "build", "cache", "*.egg-info", "__pycache__", ".pytest_cache", "docs"
    )
    shutil.copytree(ROOT, source, ignore=skip)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation"]
        + ["-q", "-w", str(tmp_path / "dist")],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for demo in ("digits-mlp", "digits-conv", "moons-circles"):
        for f in ("a.safetensors", "b.safetensors", "a.json", "b.json"):
            assert f"mtz_assets/demos/{demo}/{f}" in names
    assert {"explorer/pages/load.py", "explorer/streamlit_main.py", "explorer/app.py"} <= names
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
        + [str(wheel)],
        check=True,
        capture_output=True,
    )
    check = f"""
import mtz_core, explorer
from pathlib import Path
site = Path({str(site)!r})
assert Path(mtz_core.__file__).is_relative_to(site), mtz_core.__file__
assert Path(explorer.__file__).is_relative_to(site), explorer.__file__
from mtz_core.demo import load_demo
pair = load_demo("digits-mlp")
assert pair.card_a["task"] == "digits:0-4"
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(str(site / "explorer" / "streamlit_main.py"), default_timeout=120).run()
assert not at.exception, at.exception
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=str(site))
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_sweep_without_pandas_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now fails
    pair = ROOT / "assets" / "demos" / "moons-circles"
    code = main(["sweep", str(pair / "a.safetensors"), str(pair / "b.safetensors")])
    err = capsys.readouterr().err
    assert code == 1
    assert err == (
        "mtz: error: mtz sweep needs pandas, which is not installed: "
        "pip install 'mtz-explorer[sweep]'\n"
    )


def test_mtz_explorer_runs_the_packaged_app_or_names_the_extra(monkeypatch, capsys):
    from explorer import launch

    calls = []
    monkeypatch.setattr(launch.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert launch.main(["--server.port", "8611"]) == 0
    (cmd,) = calls
    assert cmd[1:4] == ["-m", "streamlit", "run"] and Path(cmd[4]).is_file()
    assert Path(cmd[4]).name == "streamlit_main.py" and cmd[-2:] == ["--server.port", "8611"]
    assert "--server.maxUploadSize" in cmd
    real = launch.importlib.util.find_spec
    monkeypatch.setattr(
        launch.importlib.util, "find_spec", lambda m: None if m == "streamlit" else real(m)
    )
    assert launch.main([]) == 1
    assert "pip install 'mtz-explorer[app]'" in capsys.readouterr().err
