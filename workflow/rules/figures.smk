FIG = config["figures"]


rule model_figure:
    """A figure drawn from the study's exemplar model of one dataset and its first figure architecture (the
    further architectures' figures: rule model_figure_of_architecture, below)."""
    input:
        run=figure_run,
    output:
        report(
            f"{ROOT}/figures/{{figure}}_{{dataset}}.png",
            caption="../report/model_figure.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
    params:
        tsne_points=FIG["tsne_points"],
        ks=FIG["prior_comparison_ks"],
        seed=FIG["seed"],
        profile=PROFILE,
        architecture=figure_architecture,
        stand_in=stand_in,
    wildcard_constraints:
        figure="exemplar_samples|interpolations|tsne|prior_comparison",
    log:
        f"logs/{PROFILE}/figures/{{figure}}_{{dataset}}.log",
    benchmark:
        f"{ROOT}/benchmarks/figures/{{figure}}_{{dataset}}.tsv"
    threads: 1
    resources:
        mem_mb=figure_mem_mb,
        runtime=60,
        gpu=lambda wildcards: gpus(figure_config(wildcards)),
    conda:
        ENV
    script:
        "../scripts/model_figure.py"


rule unconditional_samples:
    """Unconditional samples of every prior the study trains with the figure's architecture, side by side."""
    input:
        runs=figure_runs,
    output:
        report(
            f"{ROOT}/figures/unconditional_samples_{{dataset}}.png",
            caption="../report/unconditional_samples.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
    params:
        seed=FIG["seed"],
        profile=PROFILE,
        architecture=figure_architecture,
        stand_in=stand_in,
    log:
        f"logs/{PROFILE}/figures/unconditional_samples_{{dataset}}.log",
    benchmark:
        f"{ROOT}/benchmarks/figures/unconditional_samples_{{dataset}}.tsv"
    threads: 1
    resources:
        mem_mb=figure_mem_mb,
        runtime=10,
        gpu=lambda wildcards: gpus(figure_config(wildcards)),
    conda:
        ENV
    script:
        "../scripts/unconditional_samples.py"


rule cyclic_generation:
    """Chains of exemplar-conditioned generation from uniform noise, each image the next one's exemplar."""
    input:
        run=figure_run,
    output:
        report(
            f"{ROOT}/figures/cyclic_generation_{{dataset}}.png",
            caption="../report/cyclic_generation.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
    params:
        seed=FIG["seed"],
        profile=PROFILE,
        architecture=figure_architecture,
        stand_in=stand_in,
    log:
        f"logs/{PROFILE}/figures/cyclic_generation_{{dataset}}.log",
    benchmark:
        f"{ROOT}/benchmarks/figures/cyclic_generation_{{dataset}}.tsv"
    threads: 1
    resources:
        mem_mb=figure_mem_mb,
        runtime=10,
        gpu=lambda wildcards: gpus(figure_config(wildcards)),
    conda:
        ENV
    script:
        "../scripts/cyclic_generation.py"


# A dataset's figures of its further figure architectures (Study.figure_path): the same figures, named
# {figure}_{dataset}_{architecture}.png. Dataset and architecture wildcards take registered names only, and no
# dataset is named {dataset}_{architecture} (tests/test_study.py), so each file matches one rule in one way.


use rule model_figure as model_figure_of_architecture with:
    output:
        report(
            f"{ROOT}/figures/{{figure}}_{{dataset}}_{{architecture}}.png",
            caption="../report/model_figure.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
    log:
        f"logs/{PROFILE}/figures/{{figure}}_{{dataset}}_{{architecture}}.log",
    benchmark:
        f"{ROOT}/benchmarks/figures/{{figure}}_{{dataset}}_{{architecture}}.tsv"


use rule unconditional_samples as unconditional_samples_of_architecture with:
    output:
        report(
            f"{ROOT}/figures/unconditional_samples_{{dataset}}_{{architecture}}.png",
            caption="../report/unconditional_samples.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
    log:
        f"logs/{PROFILE}/figures/unconditional_samples_{{dataset}}_{{architecture}}.log",
    benchmark:
        f"{ROOT}/benchmarks/figures/unconditional_samples_{{dataset}}_{{architecture}}.tsv"


use rule cyclic_generation as cyclic_generation_of_architecture with:
    output:
        report(
            f"{ROOT}/figures/cyclic_generation_{{dataset}}_{{architecture}}.png",
            caption="../report/cyclic_generation.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
    log:
        f"logs/{PROFILE}/figures/cyclic_generation_{{dataset}}_{{architecture}}.log",
    benchmark:
        f"{ROOT}/benchmarks/figures/cyclic_generation_{{dataset}}_{{architecture}}.tsv"


rule training_curves:
    """Validation negative ELBO against epoch for every run of the study."""
    input:
        runs=kept([f"{STUDY.run_dir(run)}/summary.json" for run in STUDY.runs]),
    output:
        report(f"{ROOT}/figures/training_curves.png", caption="../report/training_curves.rst", category="Figures"),
    params:
        profile=PROFILE,
    log:
        f"logs/{PROFILE}/figures/training_curves.log",
    benchmark:
        f"{ROOT}/benchmarks/figures/training_curves.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    conda:
        ENV
    script:
        "../scripts/training_curves.py"


rule knn_error_vs_k:
    """kNN test error against k, in latent space for each prior and in pixel space."""
    input:
        results=kept(STUDY.knn_targets()),
    output:
        report(f"{ROOT}/figures/knn_error_vs_k.png", caption="../report/knn_error_vs_k.rst", category="Figures"),
    params:
        profile=PROFILE,
    log:
        f"logs/{PROFILE}/figures/knn_error_vs_k.log",
    benchmark:
        f"{ROOT}/benchmarks/figures/knn_error_vs_k.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        ENV
    script:
        "../scripts/knn_error_vs_k.py"
