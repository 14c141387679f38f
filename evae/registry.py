"""A name -> spec registry: what the dataset and architecture registries share."""

from __future__ import annotations

from typing import Generic, TypeVar

S = TypeVar("S")


class Registry(dict[str, S], Generic[S]):
    """Specs by their ``name``; a name is registered once, and an unknown one is an error listing the known."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, spec: S) -> S:
        """Add ``spec`` (registering the same spec again is harmless; another spec under its name is an error)."""
        if self.get(spec.name, spec) != spec:
            raise ValueError(f"{self.kind} {spec.name!r} is already registered with another spec")
        self[spec.name] = spec
        return spec

    def spec(self, name: str) -> S:
        """The spec registered as ``name``."""
        try:
            return self[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known {self.kind}s: {sorted(self)}") from None
