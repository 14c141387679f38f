rule prepare_data:
    """Find (cache, $EVAE_DATA_MIRROR, or download) and verify a dataset; record what was found (files,
    checksums, split sizes) with the profile's results."""
    output:
        f"{ROOT}/data/{{dataset}}.json",
    log:
        f"logs/{PROFILE}/data/{{dataset}}.log",
    benchmark:
        f"{ROOT}/benchmarks/data/{{dataset}}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wildcards: STUDY.data_mem_mb(wildcards.dataset),
        runtime=30,
    conda:
        ENV
    script:
        "../scripts/prepare_data.py"
