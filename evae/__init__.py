"""Exemplar VAE: a reference reproduction of Norouzi, Fleet & Norouzi (NeurIPS 2020)."""

__version__ = "0.1.0"
