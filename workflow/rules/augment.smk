AUG = config["augmentation"]


rule augment:
    """Permutation-invariant MLP classifier, with or without exemplar-VAE data augmentation."""
    input:
        data=kept(rules.prepare_data.output),
        run=exemplar_run,
    output:
        f"{ROOT}/eval/augmentation/{{dataset}}/mlp{{hidden}}-{{augment}}/seed{{seed}}.json",
    params:
        epochs=AUG["epochs"],
    log:
        f"logs/{PROFILE}/augment/{{dataset}}/mlp{{hidden}}-{{augment}}/seed{{seed}}.log",
    benchmark:
        f"{ROOT}/benchmarks/augment/{{dataset}}/mlp{{hidden}}-{{augment}}/seed{{seed}}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=lambda wildcards, attempt: STUDY.augment_runtime_minutes(
            wildcards.dataset, int(wildcards.hidden), wildcards.augment, attempt
        ),
        gpu=lambda wildcards: gpus(augment_config(wildcards)),
    conda:
        ENV
    script:
        "../scripts/augment.py"
