TABLES = STUDY.tables()  # name -> kind
CLAIMS_INPUTS = STUDY.claims_inputs()  # kind -> evaluation JSONs


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


rule claims:
    """The paper's claims tested on the study's results: one row per claim, dataset and architecture."""
    input:
        **{kind: kept(paths) for kind, paths in CLAIMS_INPUTS.items()},
        reported=kept(REPORTED),
    output:
        csv=report(
            f"{ROOT}/tables/claims.csv",
            caption="../report/claims.rst",
            category="Tables",
            labels={"table": "claims", "format": "csv"},
        ),
        md=f"{ROOT}/tables/claims.md",
    params:
        kinds=list(CLAIMS_INPUTS),
        profile=PROFILE,
    log:
        f"logs/{PROFILE}/tables/claims.log",
    benchmark:
        f"{ROOT}/benchmarks/tables/claims.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        ENV
    script:
        "../scripts/claims.py"
