rule collect_metrics:
    input:
        script=script_path("collect_metrics.py"),
        library=library_inputs("collect_metrics.py"),
        data=metric_files(),
    output:
        metrics=report(
            f"{TABLES}/metrics.csv",
            caption="../report/metrics.rst",
            category="Metrics",
            labels={"table": "all rows"},
        ),
        summary=report(
            f"{TABLES}/summary.csv",
            caption="../report/summary.rst",
            category="Metrics",
            labels={"table": "summary"},
        ),
    log:
        f"{RESULTS}/logs/collect_metrics.log",
    benchmark:
        f"{RESULTS}/benchmarks/collect_metrics.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        published=published_args(),
    shell:
        "python {input.script:q} {input.data:q} --metrics {output.metrics:q}"
        " --summary {output.summary:q} {params.published} > {log:q} 2>&1"


rule plot_examples:
    input:
        script=script_path("plot_examples.py"),
        library=library_inputs("plot_examples.py"),
        corrupted=f"{RESULTS}/{{dataset}}/{{blur}}_s{{sigma}}/corrupted.h5",
        restored=lambda wc: restored_files(wc.blur, wc.sigma),
    output:
        report(
            f"{RESULTS}/figures/examples_{{dataset}}_{{blur}}_s{{sigma}}.png",
            caption="../report/examples.rst",
            category="Restorations",
            subcategory="blur {blur}, sigma {sigma}",
            labels={"blur": "{blur}", "noise sigma": "{sigma}"},
        ),
    log:
        f"{RESULTS}/logs/plot_examples/{{dataset}}_{{blur}}_s{{sigma}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_examples/{{dataset}}_{{blur}}_s{{sigma}}.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        n=config["figures"]["n_examples"],
    shell:
        "python {input.script:q} --corrupted {input.corrupted:q}"
        " --restored {input.restored:q} --out {output:q} --n-examples {params.n} > {log:q} 2>&1"


rule plot_sweep:
    input:
        script=script_path("plot_sweep.py"),
        library=library_inputs("plot_sweep.py"),
        data=f"{TABLES}/metrics.csv",
    output:
        report(
            f"{TABLES}/figures/sweep_psnr_vs_{{parameter}}.png",
            caption="../report/sweep.rst",
            category="Sweeps",
            labels={"figure": "PSNR against {parameter}"},
        ),
    log:
        f"{RESULTS}/logs/plot_sweep/{{parameter}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_sweep/{{parameter}}.tsv"
    wildcard_constraints:
        parameter="noise_sigma|n_components|patch_size",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python {input.script:q} --metrics {input.data:q} --parameter {wildcards.parameter}"
        " --out {output:q} > {log:q} 2>&1"


rule plot_kernels:
    input:
        script=script_path("plot_kernels.py"),
        library=library_inputs("plot_kernels.py"),
        corrupted=f"{RESULTS}/{{dataset}}/{{blur}}_s{{sigma}}/corrupted.h5",
        estimate=f"{RESULTS}/{{dataset}}/{{blur}}_s{{sigma}}/kernel_estimate.h5",
    output:
        report(
            f"{RESULTS}/figures/kernels_{{dataset}}_{{blur}}_s{{sigma}}.png",
            caption="../report/kernels.rst",
            category="Blind deconvolution",
            labels={"blur": "{blur}", "noise sigma": "{sigma}"},
        ),
    log:
        f"{RESULTS}/logs/plot_kernels/{{dataset}}_{{blur}}_s{{sigma}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_kernels/{{dataset}}_{{blur}}_s{{sigma}}.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python {input.script:q} --corrupted {input.corrupted:q}"
        " --estimate {input.estimate:q} --out {output:q} > {log:q} 2>&1"


onsuccess:
    print_run_warnings()
    print(write_sweep_status(), file=sys.stderr)


onerror:
    print_run_warnings()
    print(write_sweep_status(), file=sys.stderr)
