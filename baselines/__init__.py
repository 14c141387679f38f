"""Baseline priors the Exemplar VAE is compared against: the standard Gaussian and the VampPrior."""
