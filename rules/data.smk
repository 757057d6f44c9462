rule download_dataset:
    input:
        script=script_path("download_dataset.py"),
        library=library_inputs("download_dataset.py"),
    output:
        f"{RESULTS}/data/{{dataset}}.h5",
    log:
        f"{RESULTS}/logs/download_dataset/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/download_dataset/{{dataset}}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        args=dataset_args(),
    shell:
        "python {input.script:q} {params.args} --out {output:q} > {log:q} 2>&1"


rule extract_patches:
    input:
        script=script_path("extract_patches.py"),
        library=library_inputs("extract_patches.py"),
        data=f"{RESULTS}/data/{{dataset}}.h5",
    output:
        f"{RESULTS}/{{dataset}}/patches/m{{m}}.h5",
    log:
        f"{RESULTS}/logs/extract_patches/{{dataset}}_m{{m}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract_patches/{{dataset}}_m{{m}}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        # the sampled patches (float32) plus the image stack
        mem_mb=lambda wc, input: 1000
        + int(config["patches"]["max_patches"] * int(wc.m) ** 2 * 8 / 1e6)
        + int(3 * input.size_mb),
        runtime=20,
    params:
        max_patches=config["patches"]["max_patches"],
        heldout=config["patches"]["heldout_patches"],
        transpose="--transpose-half" if config["patches"]["transpose_half"] else "",
        seed=config["seed"],
    shell:
        "python {input.script:q} --dataset {input.data:q} --out {output:q}"
        " --patch-size {wildcards.m} --max-patches {params.max_patches}"
        " --heldout-patches {params.heldout} {params.transpose} --seed {params.seed}"
        " > {log:q} 2>&1"


rule corrupt_images:
    input:
        script=script_path("corrupt_images.py"),
        library=library_inputs("corrupt_images.py"),
        data=f"{RESULTS}/data/{{dataset}}.h5",
    output:
        f"{RESULTS}/{{dataset}}/{{blur}}_s{{sigma}}/corrupted.h5",
    log:
        f"{RESULTS}/logs/corrupt_images/{{dataset}}_{{blur}}_s{{sigma}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/corrupt_images/{{dataset}}_{{blur}}_s{{sigma}}.tsv"
    wildcard_constraints:
        # the configured blurs; a paired set's given corruption comes from import_paired
        blur=names_regex(config["blurs"]),
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, input: 1000 + int(6 * input.size_mb),
        runtime=20,
    params:
        blur=blur_args,
        corruption=corruption_args(),
        n_test=config["dataset"]["n_test"],
        seed=config["seed"],
    shell:
        "python {input.script:q} --dataset {input.data:q} --out {output:q}"
        " {params.blur} {params.corruption} --sigma {wildcards.sigma}"
        " --n-test {params.n_test}"
        " --seed {params.seed} > {log:q} 2>&1"


rule import_paired:
    # source 'paired': the corruption is given; replaces corrupt_images
    input:
        unpack(paired_folder),
        script=script_path("import_paired.py"),
        library=library_inputs("import_paired.py"),
        # training images: intensity statistics and the simulated validation pairs
        reference=f"{RESULTS}/data/{{dataset}}.h5",
        # the patch prior at W's patch size: per-image gain, offset and the noise sigma
        gmm=calibration_gmm() if PAIRED else [],
    output:
        f"{RESULTS}/{{dataset}}/{{blur}}_s{{sigma}}/corrupted.h5",
    log:
        f"{RESULTS}/logs/import_paired/{{dataset}}_{{blur}}_s{{sigma}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/import_paired/{{dataset}}_{{blur}}_s{{sigma}}.tsv"
    wildcard_constraints:
        blur=PAIRED_BLUR,
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, input: 1000 + int(6 * input.size_mb),
        runtime=20,
    params:
        args=paired_args(),
    shell:
        "python {input.script:q} {params.args} --reference {input.reference:q}"
        " --gmm {input.gmm:q} --out {output:q} > {log:q} 2>&1"
