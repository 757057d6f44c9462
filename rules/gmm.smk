rule train_gmm:
    input:
        script=script_path("train_gmm.py"),
        library=library_inputs("train_gmm.py"),
        data=f"{RESULTS}/{{dataset}}/patches/m{{m}}.h5",
    output:
        f"{RESULTS}/{{dataset}}/gmm/m{{m}}_K{{K}}.h5",
    log:
        f"{RESULTS}/logs/train_gmm/{{dataset}}_m{{m}}_K{{K}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_gmm/{{dataset}}_m{{m}}_K{{K}}.tsv"
    conda:
        "../envs/gmm.yaml"
    threads: gmm_threads
    resources:
        # patches in memory (or streamed within the budget) + N x K responsibilities
        mem_mb=lambda wc, input: 1500
        + min(int(4 * input.size_mb), int(config["gmm"]["memory_budget_mb"])),
        runtime=lambda wc: 30 + int(wc.K) // 4,
    params:
        args=gmm_args(),
        checkpoint=lambda wc: f"{RESULTS}/{wc.dataset}/gmm/m{wc.m}_K{wc.K}.checkpoint.h5",
    shell:
        "OMP_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads}"
        " python {input.script:q} --patches {input.data:q} --out {output:q}"
        " --components {wildcards.K} {params.args} --checkpoint {params.checkpoint:q}"
        " > {log:q} 2>&1"


rule train_image_gmm:
    # the whole-image mixture of method epll_image_prior (small images only)
    input:
        script=script_path("train_gmm.py"),
        library=library_inputs("train_gmm.py"),
        data=f"{RESULTS}/data/{{dataset}}.h5",
    output:
        f"{RESULTS}/{{dataset}}/gmm/images_K{{K}}.h5",
    log:
        f"{RESULTS}/logs/train_image_gmm/{{dataset}}_K{{K}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_image_gmm/{{dataset}}_K{{K}}.tsv"
    conda:
        "../envs/gmm.yaml"
    threads: 2
    resources:
        # the images, and about three copies of K float64 covariances of 784 x 784 (5 MB each;
        # sized for MNIST digits: larger images need mem_mb set in a profile)
        mem_mb=lambda wc, input: 2000 + int(20 * input.size_mb) + 15 * int(wc.K),
        runtime=30,
    params:
        args=image_gmm_args(),
        checkpoint=lambda wc: f"{RESULTS}/{wc.dataset}/gmm/images_K{wc.K}.checkpoint.h5",
    shell:
        "OMP_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads}"
        " python {input.script:q} --images {input.data:q} --out {output:q}"
        " --components {wildcards.K} {params.args} --checkpoint {params.checkpoint:q}"
        " > {log:q} 2>&1"


rule plot_gmm:
    input:
        script=script_path("plot_gmm.py"),
        library=library_inputs("plot_gmm.py"),
        data=f"{RESULTS}/{{dataset}}/gmm/m{{m}}_K{{K}}.h5",
    output:
        report(
            f"{RESULTS}/figures/gmm_{{dataset}}_m{{m}}_K{{K}}.png",
            caption="../report/gmm.rst",
            category="GMM prior",
            subcategory="m={m}, K={K}",
            labels={
                "figure": "GMM training",
                "patch size": "{m}",
                "components": "{K}",
            },
        ),
    log:
        f"{RESULTS}/logs/plot_gmm/{{dataset}}_m{{m}}_K{{K}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_gmm/{{dataset}}_m{{m}}_K{{K}}.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python {input.script:q} --gmm {input.data:q} --out {output:q} > {log:q} 2>&1"
