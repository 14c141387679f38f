TABLES = STUDY.tables()  # name -> kind


rule table:
    """Reported-vs-reproduced table: one row per (dataset, architecture, prior), CSV and Markdown."""
    input:
        results=lambda wildcards: kept(STUDY.table_inputs(wildcards.table)),
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
        kind=lambda wildcards: TABLES[wildcards.table],
        profile=PROFILE,
        stand_ins=STUDY.stand_ins(),
    wildcard_constraints:
        table="|".join(TABLES),
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
