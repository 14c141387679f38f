"""The prior interface and the prior registry; the baseline priors live in the ``baselines`` package.

Priors are found by name: those installed under the ``evae.priors`` entry-point group (pyproject.toml),
and those registered in the running process with `register_prior` (a notebook, a test, a plugin that
is not installed). A prior class has ``from_config(cfg, train_images)`` and implements `Prior`.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from evae.priors.base import Encoder, Prior

__all__ = ["Encoder", "Prior", "prior_class", "prior_names", "register_prior"]

_REGISTERED: dict[str, type[Prior]] = {}


@cache
def _installed() -> dict:
    """The installed priors' entry points (read once: scanning the installed packages is slow)."""
    return {ep.name: ep for ep in entry_points(group="evae.priors")}


def register_prior(name: str, cls: type[Prior]) -> type[Prior]:
    """Make ``cls`` the prior called ``name`` in this process (a name already taken is an error)."""
    if not (isinstance(cls, type) and issubclass(cls, Prior) and hasattr(cls, "from_config")):
        raise TypeError(f"prior {name!r}: {cls!r} is not a Prior subclass with a from_config(cfg, train_images)")
    if name in _installed() or _REGISTERED.get(name, cls) is not cls:
        raise ValueError(f"prior {name!r} is already registered; registered priors: {prior_names()}")
    _REGISTERED[name] = cls
    return cls


def prior_names() -> list[str]:
    """Every prior a config can name, sorted."""
    return sorted({*_installed(), *_REGISTERED})


def prior_class(name: str) -> type[Prior]:
    """The prior registered under ``name``."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    installed = _installed()
    if name not in installed:
        raise KeyError(
            f"unknown prior {name!r}; registered priors: {prior_names()} (is the package installed with pip install -e .?)"
        )
    return installed[name].load()
