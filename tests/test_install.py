"""The two conda environments, CPU (environment.yml) and CUDA (environment-cuda.yml), differ only in the torch build."""

from __future__ import annotations

import yaml

from tests.test_environment import REPO, pin_differences, pins, pyproject_requirements

CPU, CUDA = (yaml.safe_load((REPO / name).read_text()) for name in ("environment.yml", "environment-cuda.yml"))


def _options_and_rest(env: dict) -> tuple[list[str], list]:
    """(pip options such as --extra-index-url, every other dependency entry) of an environment file."""
    (pip,) = [entry["pip"] for entry in env["dependencies"] if isinstance(entry, dict)]
    conda = [entry for entry in env["dependencies"] if not isinstance(entry, dict)]
    return [p for p in pip if p.startswith("--")], conda + [p for p in pip if not p.startswith("--")]


def test_the_cuda_environment_is_the_cpu_one_with_the_cuda_build_of_torch():
    cpu_options, cpu_rest = _options_and_rest(CPU)
    cuda_options, cuda_rest = _options_and_rest(CUDA)
    assert cuda_rest == cpu_rest, "environment-cuda.yml must list what environment.yml lists"
    assert cpu_options == ["--extra-index-url https://download.pytorch.org/whl/cpu"]
    (index,) = cuda_options
    assert index.startswith("--extra-index-url https://download.pytorch.org/whl/cu"), index
    assert CUDA["name"] != CPU["name"]  # both can be created side by side


def test_the_cuda_environment_pins_what_pyproject_pins():
    _, rest = _options_and_rest(CUDA)
    packages = [p for p in rest if not p.startswith((".", "-")) and not p.startswith(("python", "pip"))]
    problems = pin_differences(pins(pyproject_requirements(), "pyproject.toml"), pins(packages, "environment-cuda.yml"))
    assert not problems, "environment-cuda.yml is out of step with pyproject.toml:\n  " + "\n  ".join(problems)
