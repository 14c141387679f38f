"""Evaluation of trained runs (docs/protocol.md section 5); each writes one JSON result with its provenance
(``evae.runs.write_result``).

* ``nll``: importance-weighted test NLL (``evaluate_nll``), with the exemplar prior's
  ``evaluation_log_prob`` as its hot spot;
* ``knn``: k-nearest-neighbour classification on encoder means (``knn_probe``);
* ``augment``: MLP classifiers with and without exemplar-VAE data augmentation (``train_classifier``).
"""
