"""The environment files agree, `evae` stays independent of `baselines`, entry points and package data resolve."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
ENVIRONMENT = yaml.safe_load((REPO / "environment.yml").read_text())

_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*)")
_NOT_PINNED_HERE = {"python", "pip"}  # the interpreter and installer; python is checked on its own


def parse_requirement(text: str) -> tuple[str, str]:
    """``(name, specifier)`` normalised for comparison: PEP 503 name, specifier clauses without spaces, sorted.

    Works for PEP 508 strings and for conda match specs of the same form ("numpy>=2.0,<3").
    """
    match = _REQUIREMENT.match(text.strip())
    if not match:
        raise ValueError(f"cannot parse requirement {text!r}")
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    clauses = sorted(c.replace(" ", "") for c in match.group(2).split(",") if c.strip())
    return name, ",".join(clauses)


def pins(requirements: list[str], where: str) -> dict[str, str]:
    """Name -> specifier; a name listed twice is an error (two pins for one package)."""
    out: dict[str, str] = {}
    for text in requirements:
        name, spec = parse_requirement(text)
        assert name not in out, f"{where}: {name} is listed twice ({out[name]!r} and {spec!r})"
        out[name] = spec
    return out


def pin_differences(pyproject: dict[str, str], environment: dict[str, str]) -> list[str]:
    """Every package missing from one file or pinned differently in the two, as readable lines."""
    problems = []
    for name in sorted(pyproject.keys() | environment.keys()):
        if name not in environment:
            problems.append(f"{name}{pyproject[name]} is in pyproject.toml but not in environment.yml")
        elif name not in pyproject:
            problems.append(f"{name}{environment[name]} is in environment.yml but not in pyproject.toml")
        elif pyproject[name] != environment[name]:
            problems.append(f"{name}: pyproject.toml pins {pyproject[name]!r}, environment.yml {environment[name]!r}")
    return problems


def pyproject_requirements() -> list[str]:
    """The runtime dependencies and the test extra (what environment.yml must provide)."""
    project = PYPROJECT["project"]
    return project["dependencies"] + project["optional-dependencies"]["test"]


def environment_entries() -> tuple[list[str], list[str]]:
    """(conda specs, pip requirement lines) of environment.yml."""
    conda, pip = [], []
    for entry in ENVIRONMENT["dependencies"]:
        if isinstance(entry, dict):
            pip += entry["pip"]
        else:
            conda.append(entry)
    return conda, pip


def environment_requirements() -> list[str]:
    """Package specs of environment.yml: conda and pip, less options (``--extra-index-url``) and the project itself."""
    conda, pip = environment_entries()
    packages = [c for c in conda if parse_requirement(c)[0] not in _NOT_PINNED_HERE]
    return packages + [p for p in pip if not p.startswith(("-", "."))]


def test_pin_comparison_reports_missing_and_different_pins():
    py = pins(["numpy>=2.0,<3", "torch==2.13.0", "tqdm>=4.66"], "a")
    env = pins(["numpy >=2.0, <3", "torch==2.12.0", "scipy>=1.13"], "b")
    assert pin_differences(py, env) == [
        "scipy>=1.13 is in environment.yml but not in pyproject.toml",
        "torch: pyproject.toml pins '==2.13.0', environment.yml '==2.12.0'",
        "tqdm>=4.66 is in pyproject.toml but not in environment.yml",
    ]
    assert parse_requirement("Faiss_CPU[extra] == 1.15.1 ; python_version>'3'") == ("faiss-cpu", "==1.15.1")
    # conda's single "=" is a prefix match, not pip's "==": it must count as a different pin
    assert pin_differences(pins(["torch==2.13.0"], "a"), pins(["torch=2.13.0"], "b"))


def test_environment_yml_pins_exactly_what_pyproject_pins():
    problems = pin_differences(
        pins(pyproject_requirements(), "pyproject.toml"), pins(environment_requirements(), "environment.yml")
    )
    assert not problems, "environment.yml is out of step with pyproject.toml:\n  " + "\n  ".join(problems)


def test_environment_python_satisfies_requires_python():
    conda, _ = environment_entries()
    (python,) = [c for c in conda if c.startswith("python")]
    match = re.fullmatch(r"python=(\d+)\.(\d+)", python)
    assert match, f"environment.yml should pin one Python minor version (python=3.X), found {python!r}"
    minimum = re.fullmatch(r">=(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert minimum, "requires-python is expected to read '>=3.X'"
    assert tuple(map(int, match.groups())) >= tuple(map(int, minimum.groups()))


def test_environment_installs_the_project_with_its_tests():
    _, pip = environment_entries()
    assert "-e .[test]" in pip, "environment.yml should `pip install -e .[test]` the project itself"


def runtime_closure(requirements: list[str]) -> set[str]:
    """Every distribution (PEP 503 name) that installing ``requirements`` without extras brings in, read from
    the installed packages' metadata."""
    from packaging.requirements import Requirement

    seen, todo = set(), list(requirements)
    while todo:
        req = Requirement(todo.pop())
        name = parse_requirement(req.name)[0]
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        todo += importlib.metadata.requires(name) or []
    return seen


def test_a_plain_install_brings_what_the_snakemake_report_imports():
    """`pip install -e .` (no test extra, which brings pygments along with pytest) must be enough for
    `snakemake --report`: it imports jinja2, pygments and docutils."""
    closure = runtime_closure(PYPROJECT["project"]["dependencies"])
    assert {"snakemake", "jinja2", "docutils"} <= closure and "pytest" not in closure
    assert "pygments" in closure, "add pygments to [project] dependencies (and environment.yml)"


# --- evae never imports baselines -----------------------------------------------------------------

_IMPORTS_BASELINES = re.compile(
    r"^\s*(?:import\s+baselines\b|from\s+baselines\b|.*import_module\(\s*['\"]baselines\b)", re.MULTILINE
)


def test_import_pattern_catches_every_form():
    for line in ("import baselines", "from baselines.gaussian import GaussianPrior", "    import baselines.vampprior",
                 "m = importlib.import_module('baselines.gaussian')"):
        assert _IMPORTS_BASELINES.search(line), line
    for line in ("# the baselines package", "import baselines_extra", '"""from the baselines"""'):
        assert not _IMPORTS_BASELINES.search(line), line


def test_evae_source_never_imports_baselines():
    offenders = [
        f"{path.relative_to(REPO)}: {match.group(0).strip()}"
        for path in sorted((REPO / "evae").rglob("*.py"))
        for match in _IMPORTS_BASELINES.finditer(path.read_text())
    ]
    assert not offenders, "evae must find baseline priors through entry points, not imports:\n" + "\n".join(offenders)


def test_importing_every_evae_module_leaves_baselines_unimported():
    code = (
        "import importlib, pkgutil, sys, evae\n"
        "names = [m.name for m in pkgutil.walk_packages(evae.__path__, 'evae.') if not m.name.endswith('__main__')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names), sorted(m for m in sys.modules if m == 'baselines' or m.startswith('baselines.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    count, loaded = result.stdout.strip().split(" ", 1)
    assert int(count) > 10
    assert loaded == "[]", f"importing evae pulled in {loaded}"


# --- entry points and package data -----------------------------------------------------------------


def test_prior_entry_points_are_installed_and_resolve():
    from evae.priors import Prior

    declared = PYPROJECT["project"]["entry-points"]["evae.priors"]
    installed = {ep.name: ep for ep in importlib.metadata.entry_points(group="evae.priors")}
    assert {name: ep.value for name, ep in installed.items()} == declared, (
        "installed entry points differ from pyproject.toml; reinstall with `pip install -e .`"
    )
    assert {"exemplar", "gaussian", "vampprior"} <= declared.keys()
    for name, ep in installed.items():
        cls = ep.load()
        assert isinstance(cls, type) and issubclass(cls, Prior), f"{name} -> {ep.value} is not a Prior subclass"
        assert cls.__module__ == ep.value.split(":")[0]


def test_wheel_ships_the_embedded_subset(tmp_path):
    """Build a wheel from a copy of the sources (so nothing is written into the repo) and look inside."""
    pytest.importorskip("setuptools", reason="building a wheel without isolation needs setuptools installed")
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("evae", "baselines"):
        shutil.copytree(REPO / package, src / package, ignore=ignore)
    (src / "README.md").write_text("stand-in for the project README\n")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        capture_output=True, text=True, cwd=src, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("evae-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"evae/data/embedded/mnist_subset.npz", "evae/data/embedded/mnist_subset.json"} <= names
    assert "baselines/gaussian.py" in names
