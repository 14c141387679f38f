"""Training: the AdamNormGrad optimiser and the resumable trainer."""
