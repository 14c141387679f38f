"""The prior interface and the exemplar prior; the baseline priors live in the ``baselines`` package."""

from evae.priors.base import Encoder, Prior

__all__ = ["Encoder", "Prior"]
