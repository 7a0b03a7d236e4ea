"""Packaging: the licence and citation files agree with pyproject; third-party libraries stay in extras."""

from __future__ import annotations

from pathlib import Path

import pytest

import composition_gym

ROOT = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml with tomllib")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_license_file_is_the_mit_licence_pyproject_declares():
    text = (ROOT / "LICENSE").read_text()
    assert PROJECT["license"] == "MIT" and text.startswith("MIT License") and "WITHOUT WARRANTY" in text


def test_citation_file_cites_this_package_and_the_paper():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    for key in ("cff-version", "message", "title", "authors"):  # what the format requires
        assert cff[key]
    assert cff["version"] == PROJECT["version"] == composition_gym.__version__ and cff["license"] == "MIT"
    (paper,) = cff["references"]
    assert paper["title"].startswith("From Reasoning Traces to Reusable Modules")
    assert paper["year"] == 2026 and "2606.18089" in paper["url"]


def test_the_ecosystem_libraries_are_optional_extras_all_in_dev():
    core = " ".join(PROJECT["dependencies"])
    extras = PROJECT["optional-dependencies"]
    for extra, libs in {"torchrl": ["torchrl", "tensordict"], "llm": ["datasets", "transformers", "trl"],
                        "video": ["moviepy"], "zoo": ["rl_zoo3"]}.items():
        for lib in libs:
            assert lib not in core and any(req.startswith(lib) for req in extras[extra])
    assert "composition-gym[zoo,video,torchrl,llm]" in extras["dev"]
