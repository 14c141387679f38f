EVAL = f"{ROOT}/eval/{{dataset}}/{{architecture}}/{{prior}}/seed{{seed}}"
NLL = config["nll"]


rule nll:
    """Importance-weighted test NLL of one trained model."""
    input:
        run=kept(rules.train.output.summary),
    output:
        f"{EVAL}/nll.json",
    params:
        samples=NLL["samples"],
        exemplar_bound=NLL["exemplar_bound"],
        max_images=NLL["max_images"],
    log:
        f"logs/{PROFILE}/nll/{{dataset}}/{{architecture}}/{{prior}}/seed{{seed}}.log",
    benchmark:
        f"{ROOT}/benchmarks/nll/{{dataset}}/{{architecture}}/{{prior}}/seed{{seed}}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wildcards: STUDY.eval_mem_mb(train_config(wildcards)),
        runtime=lambda wildcards, attempt: STUDY.nll_runtime_minutes(train_config(wildcards), attempt),
        gpu=lambda wildcards: gpus(train_config(wildcards)),
    conda:
        ENV
    script:
        "../scripts/nll.py"


rule knn:
    """kNN classification error on encoder means (and in pixel space) for k in config knn.ks."""
    input:
        run=kept(rules.train.output.summary),
    output:
        f"{EVAL}/knn.json",
    params:
        ks=config["knn"]["ks"],
    log:
        f"logs/{PROFILE}/knn/{{dataset}}/{{architecture}}/{{prior}}/seed{{seed}}.log",
    benchmark:
        f"{ROOT}/benchmarks/knn/{{dataset}}/{{architecture}}/{{prior}}/seed{{seed}}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wildcards: STUDY.eval_mem_mb(train_config(wildcards)),
        runtime=30,
        gpu=lambda wildcards: gpus(train_config(wildcards)),
    conda:
        ENV
    script:
        "../scripts/knn.py"
