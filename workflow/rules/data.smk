rule prepare_data:
    """Find (cache, $EVAE_DATA_MIRROR, or download) and verify a dataset; record its manifest."""
    output:
        "resources/data/manifests/{dataset}.json",
    log:
        "logs/data/{dataset}.log",
    benchmark:
        "results/benchmarks/data/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wildcards: 6000 if wildcards.dataset == "celeba" else 2000,
        runtime=30,
    conda:
        ENV
    script:
        "../scripts/prepare_data.py"
