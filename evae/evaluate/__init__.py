"""Evaluation of trained runs (method.md section 5); each writes one JSON result with its provenance.

* ``nll``: importance-weighted test NLL (``evaluate_nll``), with ``exemplar_logprior`` as its hot spot;
* ``knn``: k-nearest-neighbour classification on encoder means (``knn_probe``);
* ``augment``: MLP classifiers with and without exemplar-VAE data augmentation (``train_classifier``).
"""
