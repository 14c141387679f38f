"""Training: the AdamNormGrad optimiser, the computations of an epoch (``loop``) and the resumable trainer."""
