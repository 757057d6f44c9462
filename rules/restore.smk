rule restore_images:
    # a GMM method with the true kernel, or ('-blind') with the estimated one
    input:
        script=script_path("restore_images.py"),
        library=library_inputs("restore_images.py"),
        corrupted=f"{RESULTS}/{{dataset}}/{{blur}}_s{{sigma}}/corrupted.h5",
        gmm=f"{RESULTS}/{{dataset}}/gmm/m{{m}}_K{{K}}.h5",
        kernel=estimated_kernel_input,
        image_gmm=image_gmm_input,
    output:
        f"{RESULTS}/{{dataset}}/{{blur}}_s{{sigma}}/m{{m}}_K{{K}}/{{method}}{{blind}}.h5",
    log:
        f"{RESULTS}/logs/restore_images/{{dataset}}_{{blur}}_s{{sigma}}_m{{m}}_K{{K}}_{{method}}{{blind}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/restore_images/{{dataset}}_{{blur}}_s{{sigma}}_m{{m}}_K{{K}}_{{method}}{{blind}}.tsv"
    conda:
        "../envs/restore.yaml"
    threads: 2
    resources:
        mem_mb=restore_mem_mb,
        runtime=60,
    params:
        extra=lambda wc: RESTORE_PARAMS["method_args"].get(wc.method, ""),
        kernel=estimated_kernel_arg,
        image_gmm=image_gmm_arg,
        chunk=RESTORE_PARAMS["chunk"],
        clip=RESTORE_PARAMS["clip"],
    shell:
        "OMP_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads}"
        " python {input.script:q} --corrupted {input.corrupted:q} --gmm {input.gmm:q}"
        " {params.kernel}--method {wildcards.method} --out {output:q}"
        " --images-per-chunk {params.chunk} {params.clip} {params.extra} {params.image_gmm}"
        " > {log:q} 2>&1"


rule estimate_kernel:
    input:
        script=script_path("estimate_kernel.py"),
        library=library_inputs("estimate_kernel.py"),
        data=f"{RESULTS}/{{dataset}}/{{blur}}_s{{sigma}}/corrupted.h5",
        # sharp training images: the learned spectral prior of the kernel EM
        prior=f"{RESULTS}/data/{{dataset}}.h5",
        # tv_judged: the natural-patch GMM that chooses among the candidate kernels
        judge_gmm=judge_gmm,
    output:
        f"{RESULTS}/{{dataset}}/{{blur}}_s{{sigma}}/kernel_estimate.h5",
    log:
        f"{RESULTS}/logs/estimate_kernel/{{dataset}}_{{blur}}_s{{sigma}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/estimate_kernel/{{dataset}}_{{blur}}_s{{sigma}}.tsv"
    conda:
        "../envs/restore.yaml"
    threads: 2
    resources:
        mem_mb=lambda wc, input: 1500 + int(8 * input.size_mb),
        runtime=60,
    params:
        size=lambda wc: config["blurs"][wc.blur].get(
            "kernel_size", max(config["blurs"][wc.blur]["size"], 3)
        ),
        batch=lambda wc: (
            1
            if kernel_prior(wc.blur) in PHOTOGRAPH_PRIORS
            else config["blurs"][wc.blur]["batch_size"]
        ),
        kernel_prior=lambda wc: kernel_prior(wc.blur),
        judge=judge_gmm_arg,
        seed=config["seed"],
    shell:
        "OMP_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads}"
        " python {input.script:q} --corrupted {input.data:q} --prior-dataset {input.prior:q}"
        " --out {output:q} --kernel-size {params.size} --batch-size {params.batch}"
        " --prior {params.kernel_prior} {params.judge} --seed {params.seed} > {log:q} 2>&1"


rule restore_baseline:
    # a baseline with the true kernel, or ('-blind', fixed-parameter baselines) the estimated one
    input:
        script=script_path("restore_baseline.py"),
        library=library_inputs("restore_baseline.py"),
        data=f"{RESULTS}/{{dataset}}/{{blur}}_s{{sigma}}/corrupted.h5",
        kernel=estimated_kernel_input,
    output:
        f"{RESULTS}/{{dataset}}/{{blur}}_s{{sigma}}/baseline/{{method}}{{blind}}.h5",
    log:
        f"{RESULTS}/logs/restore_baseline/{{dataset}}_{{blur}}_s{{sigma}}_{{method}}{{blind}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/restore_baseline/{{dataset}}_{{blur}}_s{{sigma}}_{{method}}{{blind}}.tsv"
    conda:
        "../envs/baselines.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, input: 1500 + int(10 * input.size_mb),
        runtime=60,
    params:
        seed=config["seed"],
        clip=RESTORE_PARAMS["clip"],
        kernel=estimated_kernel_arg,
    shell:
        "OMP_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads}"
        " python {input.script:q} --corrupted {input.data:q} --method {wildcards.method}"
        " {params.kernel}--out {output:q} --seed {params.seed} {params.clip} > {log:q} 2>&1"


rule evaluate_corrupted:
    input:
        script=script_path("evaluate_restoration.py"),
        library=library_inputs("evaluate_restoration.py"),
        data=f"{RESULTS}/{{dataset}}/{{blur}}_s{{sigma}}/corrupted.h5",
    output:
        f"{RESULTS}/{{dataset}}/{{blur}}_s{{sigma}}/metrics/corrupted.csv",
    log:
        f"{RESULTS}/logs/evaluate/{{dataset}}_{{blur}}_s{{sigma}}_corrupted.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}_{{blur}}_s{{sigma}}_corrupted.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python {input.script:q} --corrupted {input.data:q} --out {output:q}"
        " > {log:q} 2>&1"


rule evaluate_restoration:
    # the restoration; blind: also the kernel estimate and the true-kernel restoration
    input:
        unpack(evaluation_inputs),
        script=script_path("evaluate_restoration.py"),
        library=library_inputs("evaluate_restoration.py"),
        corrupted=f"{RESULTS}/{{dataset}}/{{blur}}_s{{sigma}}/corrupted.h5",
    output:
        f"{RESULTS}/{{dataset}}/{{blur}}_s{{sigma}}/metrics/{{restoration}}.csv",
    log:
        f"{RESULTS}/logs/evaluate/{{dataset}}_{{blur}}_s{{sigma}}_{{restoration}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}_{{blur}}_s{{sigma}}_{{restoration}}.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        blind=blind_evaluation_args,
    shell:
        "python {input.script:q} --corrupted {input.corrupted:q}"
        " --restored {input.restored:q} {params.blind} --out {output:q} > {log:q} 2>&1"
