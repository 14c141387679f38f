RUN = f"{ROOT}/runs/{{dataset}}/{{architecture}}/{{prior}}/seed{{seed}}"


rule train:
    """Train one model. Resumable: an interrupted job continues from checkpoint.pt in its run folder,
    which Snakemake leaves alone because only summary.json (written last) is a declared output."""
    input:
        kept(rules.prepare_data.output),
    output:
        summary=f"{RUN}/summary.json",
    params:
        config=lambda wildcards: train_config(wildcards).to_dict(),
    log:
        f"logs/{PROFILE}/train/{{dataset}}/{{architecture}}/{{prior}}/seed{{seed}}.log",
    benchmark:
        f"{ROOT}/benchmarks/train/{{dataset}}/{{architecture}}/{{prior}}/seed{{seed}}.tsv"
    threads: lambda wildcards: train_config(wildcards).threads
    resources:
        mem_mb=lambda wildcards: STUDY.train_mem_mb(train_config(wildcards)),
        # a retry (after a time-limit kill on a cluster) resumes from the checkpoint with more time, within the cap
        runtime=lambda wildcards, attempt: STUDY.train_runtime_minutes(train_config(wildcards), attempt),
        gpu=lambda wildcards: gpus(train_config(wildcards)),
    conda:
        ENV
    script:
        "../scripts/train.py"
