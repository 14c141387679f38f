TABLE_INPUTS = {
    "nll": STUDY.nll_targets(),
    "knn": STUDY.knn_targets(),
    "augmentation": STUDY.augmentation_targets(),
    "celeba": STUDY.celeba_nll_targets(),
}


rule table:
    """Reported-vs-reproduced table: one row per (dataset, architecture, prior), CSV and Markdown."""
    input:
        results=lambda wildcards: kept(TABLE_INPUTS[wildcards.table]),
        reported=kept(REPORTED),
    output:
        csv=report(
            f"{ROOT}/tables/{{table}}.csv",
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}", "format": "csv"},
        ),
        md=f"{ROOT}/tables/{{table}}.md",
    params:
        profile=PROFILE,
    wildcard_constraints:
        table="nll|knn|augmentation|celeba",
    log:
        f"logs/{PROFILE}/tables/{{table}}.log",
    benchmark:
        f"{ROOT}/benchmarks/tables/{{table}}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        ENV
    script:
        "../scripts/table.py"
