# gmmrestore: restore blurred and noisy images with Gaussian-mixture patch priors.
# Data flow: download_dataset -> extract_patches -> train_gmm -> corrupt_images ->
# restore_images / restore_baseline (/ estimate_kernel) -> evaluate_* -> collect_metrics
# -> plot_*.  See README.md.


from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/gmm.smk"
include: "rules/restore.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
