"""Rule augment: an MLP classifier, with exemplar-VAE augmentation when the rule names a model."""

from evae.evaluate.augment import train_classifier
from evae.pipeline_job import pipeline_job

with pipeline_job(snakemake):  # noqa: F821 (injected by Snakemake)
    w = snakemake.wildcards  # noqa: F821
    train_classifier(
        w.dataset,
        snakemake.output[0],  # noqa: F821
        run_dir=snakemake.input.run if w.augment == "exemplar" else None,  # noqa: F821
        hidden=int(w.hidden),
        epochs=snakemake.params.epochs,  # noqa: F821
        seed=int(w.seed),
        progress=False,
    )
