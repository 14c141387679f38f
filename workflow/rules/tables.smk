TABLE_INPUTS = {
    "nll": STUDY.nll_targets(),
    "knn": STUDY.knn_targets(),
    "augmentation": STUDY.augmentation_targets(),
    "celeba": STUDY.celeba_nll_targets(),
}


rule table:
    """Reported-vs-reproduced table: one row per (dataset, architecture, prior), CSV and Markdown."""
    input:
        results=lambda wildcards: TABLE_INPUTS[wildcards.table],
        reported=REPORTED,
    output:
        csv=report(
            "results/tables/{table}.csv",
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}", "format": "csv"},
        ),
        md="results/tables/{table}.md",
    params:
        profile=PROFILE,
    wildcard_constraints:
        table="nll|knn|augmentation|celeba",
    log:
        "logs/tables/{table}.log",
    benchmark:
        "results/benchmarks/tables/{table}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        ENV
    script:
        "../scripts/table.py"
