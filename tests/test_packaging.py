"""Installable next to other libraries: ranges in pyproject, exact pins only in constraints.txt (which
`make` uses), a LICENSE that matches the declared license."""

import re
import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _name(spec: str) -> str:
    return re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def _pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_dependencies_are_ranges_and_every_one_is_pinned_in_constraints():
    project = _pyproject()
    specs = list(project["dependencies"])
    for extra, deps in project["optional-dependencies"].items():
        specs += [d for d in deps if not d.startswith("magtok")]
    pins = _pins()
    for spec in specs:
        assert "==" not in spec, f"pyproject pins {spec!r} exactly; use a range (the pin goes in constraints.txt)"
        assert re.search(r"[<>]=?", spec), f"{spec!r} has no version range"
        assert _name(spec) in pins, f"{_name(spec)} is not pinned in constraints.txt"


def test_the_makefile_installs_with_the_constraints():
    make = (REPO / "Makefile").read_text()
    installs = [ln for ln in make.splitlines() if "$(PIP) install" in ln and "--no-deps" not in ln]
    assert installs and all("-c $(CONSTRAINTS)" in ln for ln in installs)
    assert "CONSTRAINTS := constraints.txt" in make


def test_license_file_matches_pyproject():
    assert _pyproject()["license"] == {"text": "MIT"}
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text


def test_version_is_one_number():
    import magtok

    assert magtok.__version__ == _pyproject()["version"]


@pytest.mark.slow
def test_the_wheel_ships_the_bundled_tokenizer(tmp_path):
    """`pip install .` must carry magtok-small (from_pretrained("magtok-small") offline) and the C++ kernel."""
    import subprocess
    import sys
    import zipfile

    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next(tmp_path.glob("magtok-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("magtok/pretrained/magtok-small/config.json", "magtok/pretrained/magtok-small/model.safetensors",
              "magtok/pretrained/magtok-small/MODEL_CARD.md", "magtok/kernels/winograd.cpp",
              "magtok/pipeline/__init__.py"):
        assert f in names, f"{f} is missing from {wheel.name}"
