"""How dify-bridge is installed: `make run` takes only what it needs, the image builds cheaply.

No Docker engine is needed: the Dockerfile is read as text, `make` is asked what it would run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def make_dry_run(target: str) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("no make here")
    # Not the settings of a make that runs this test (`make test`): they add directory lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    done = subprocess.run(  # noqa: S603
        ["make", "--no-print-directory", "-n", "-B", target],  # noqa: S607
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.splitlines()


def test_make_run_installs_the_runtime_dependencies_only() -> None:
    lines = make_dry_run("run")
    installs = [ln for ln in lines if "pip install" in ln and "--upgrade pip" not in ln]
    assert installs == [".venv/bin/pip install --quiet -e ."]
    assert lines[-1] == "exec .venv/bin/dify-bridge serve"


def test_make_test_installs_the_test_tools_and_runs_pytest() -> None:
    lines = make_dry_run("test")
    assert ".venv/bin/pip install --quiet -e '.[dev]'" in lines
    assert lines[-1].startswith(".venv/bin/python -m pytest")


def dockerfile_build_stage() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    stages = [i for i, ln in enumerate(lines) if ln.startswith("FROM ")]
    return lines[stages[0] : stages[1]]


def test_the_image_installs_dependencies_in_a_layer_a_code_change_does_not_touch() -> None:
    build = dockerfile_build_stage()
    copies = [(i, ln) for i, ln in enumerate(build) if ln.startswith("COPY ")]
    runs = [(i, ln) for i, ln in enumerate(build) if ln.startswith("RUN ")]
    # The first install sees pyproject.toml and nothing else of the source tree.
    first_run, deps_install = runs[0]
    copied_before = [ln for i, ln in copies if i < first_run]
    assert copied_before == ["COPY pyproject.toml ./"]
    assert "-r requirements.txt" in deps_install
    # The code comes after it and is installed without resolving dependencies again.
    code_copies = [i for i, ln in copies if re.search(r"COPY (app|adapters) ", ln)]
    assert code_copies and min(code_copies) > first_run
    last_run = runs[-1][1]
    assert "--no-deps" in last_run and last_run.rstrip().endswith(".")


def test_the_container_docs_and_dockerfile_agree_on_what_the_image_contains() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    docker_section = (ROOT / "docs" / "admin" / "container.md").read_text()
    assert "COPY manifests /app/manifests" in dockerfile
    assert "the image contains `manifests/`" in docker_section
    assert "does not contain" not in docker_section
    # The image sets no BRIDGE_CONFIG: a mounted config/bridge.yaml is optional, as documented.
    assert "BRIDGE_CONFIG" not in [
        ln.split("=")[0].strip() for ln in re.findall(r"^\s+(\w+)=", dockerfile, flags=re.M)
    ]
