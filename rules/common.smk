import csv
import os
import re
import shlex
import sys
import time

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, os.path.join(workflow.basedir, "src"))  # the checkout's gmmrestore
# jobs run `python`: the interpreter running Snakemake (e.g. .venv/bin/snakemake's, with the
# dependencies) comes first on PATH; with --use-conda the job's env is activated over it
os.environ.update(
    PATH=os.pathsep.join(
        [os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)]
    )
)
from gmmrestore.configcheck import (
    PAIRED_BLUR,
    check_paired_config,
    check_settings,
    is_paired,
    schema_error_message,
    training_source,
)
from gmmrestore.deconv import DEFAULT_PHOTOGRAPH_PRIOR, JUDGED_PRIORS, PHOTOGRAPH_PRIORS
from gmmrestore.depends import library_sources
from gmmrestore.h5io import GmmRestoreError
from gmmrestore import runlock, runstatus
from gmmrestore.restore import registry
from gmmrestore.runwarnings import report_warnings
from gmmrestore.workflow import (
    names_regex,
    paired_key,
    sweep_settings,
    unique,
)

# restore.plugins: modules whose import registers more methods (gmmrestore.restore.registry);
# the schema's restore.methods enum lists the built-in ones, so the plugins' names are
# checked by the registry and left out of the schema validation
PLUGINS = (config.get("restore") or {}).get("plugins") or []
# (a value of the wrong type is left to the schema's message)
PLUGINS = (
    [p for p in PLUGINS if isinstance(p, str)] if isinstance(PLUGINS, list) else []
)
try:
    PLUGIN_METHODS = registry.load_plugins(PLUGINS)
except (GmmRestoreError, ValueError) as err:
    raise WorkflowError(f"config: restore.plugins: {err}") from None
_methods = (config.get("restore") or {}).get("methods")
_given = list(_methods) if isinstance(_methods, list) else None
if _given is not None:
    # (a list of plugin methods only is checked with a built-in name in their place)
    _methods[:] = [m for m in _given if m not in PLUGIN_METHODS] or [
        registry.method_names()[0]
    ]
try:
    validate(config, "../schemas/config.schema.yaml")
except WorkflowError as err:
    # one line naming the key, the value and what is allowed, not the schema dump
    if not hasattr(err.__context__, "validator"):
        raise
    raise WorkflowError(schema_error_message(err.__context__)) from None
finally:
    if _given is not None:
        _methods[:] = _given

RESULTS = config["results_dir"]
RUN_STARTED = time.time()  # the job logs written since then are this run's (warnings)
DATASET = config["dataset"]["name"]
SCRIPTS = os.path.join(workflow.basedir, "scripts")
GMM_METHODS = registry.method_names("gmm")  # the others are baselines
PAIRED = is_paired(config)


def script_path(name):
    """A stage's script, passed as an input so that editing it triggers a rerun."""
    return os.path.join(SCRIPTS, name)


def library_inputs(name):
    """The gmmrestore modules a stage's script imports (directly or not), passed as inputs
    so that editing the library reruns the stages that use the edited module."""
    return library_sources(script_path(name), os.path.join(workflow.basedir, "src"))


SWEEP_PARAMETERS = (
    "noise_sigma",
    "n_components",
    "patch_size",
)  # plotted when they vary


def calibration_gmm():
    """Source 'paired': the patch prior the import calibrates with, at W's patch size (read
    from W.npy; the first setting's when W.npy is missing, which the import then reports)
    and the largest number of components configured for that size."""
    path = os.path.join(config["dataset"]["paired"]["folder"], "W.npy")
    m = SETTINGS[0].patch_size
    if os.path.isfile(path):
        import numpy

        m = int(round(numpy.load(path, mmap_mode="r").shape[0] ** 0.5))
    ks = [s.n_components for s in SETTINGS if s.patch_size == m]
    ks = ks or [s.n_components for s in SETTINGS]
    return f"{RESULTS}/{DATASET}/gmm/m{m}_K{max(ks)}.h5"


check_paired_config(config)
SETTINGS = sweep_settings(config)
check_settings(
    config,
    SETTINGS,
    (
        f"sweep_table '{config['sweep_table']}'"
        if config.get("sweep_table")
        else "sweep"
    ),
    # a paired set's settings all use its given blur, not one under 'blurs'
    given_blurs=[PAIRED_BLUR] if PAIRED else [],
    image_prior_methods=registry.method_names(needs="image_gmm"),
)
NOISE_SETTINGS = unique(
    (s.blur, s.noise_sigma) for s in SETTINGS
)  # corrupted image sets
GMM_MODELS = unique(
    (s.patch_size, s.n_components) for s in SETTINGS
)  # trained mixtures
GMM_LIST = [m for m in config["restore"]["methods"] if m in GMM_METHODS]
BASELINE_LIST = [
    m for m in config["restore"]["methods"] if m in registry.method_names("baseline")
]
# the report's workflow description lists the configured methods with these captions
config["_method_captions"] = registry.captions(config)


wildcard_constraints:
    # exactly the configured names, so that names with underscores never split ambiguously
    dataset=re.escape(DATASET),
    blur=names_regex([*config["blurs"], *([PAIRED_BLUR] if PAIRED else [])]),
    sigma="[0-9.e+-]+" + (f"|{re.escape(paired_key(config))}" if PAIRED else ""),
    m="[0-9]+",
    K="[0-9]+",
    method="[a-z0-9_]+",
    blind="(-blind)?",  # restore_images: '' the true kernel, '-blind' the estimated one
    restoration="(m[0-9]+_K[0-9]+|baseline)__[a-z0-9_]+(-blind)?",


def is_blind(blur):
    return bool(config["blurs"].get(blur, {}).get("blind", False))


def kernel_prior(blur):
    """Image prior of a blind kernel estimate: the blur's 'prior', by default
    DEFAULT_PHOTOGRAPH_PRIOR for photographs (corruption.boundary valid) and 'gaussian'
    (the seed's EM) otherwise."""
    boundary = config.get("corruption", {}).get("boundary", "zero")
    default = DEFAULT_PHOTOGRAPH_PRIOR if boundary == "valid" else "gaussian"
    return config["blurs"].get(blur, {}).get("prior", default)


def judge_gmm(wildcards):
    """A judged photograph prior (tv_judged): the patch GMM of the first sweep setting,
    which chooses among the candidate kernels; nothing for the other priors."""
    if kernel_prior(wildcards.blur) not in JUDGED_PRIORS:
        return []
    first = SETTINGS[0]
    return f"{RESULTS}/{wildcards.dataset}/gmm/m{first.patch_size}_K{first.n_components}.h5"


def judge_gmm_arg(wildcards, input):
    """estimate_kernel.py's --judge-gmm option for the judge's GMM input, if any."""
    return f"--judge-gmm {shlex.quote(str(input.judge_gmm))}" if input.judge_gmm else ""


def setting_dir(blur, sigma):
    return f"{RESULTS}/{DATASET}/{blur}_s{sigma}"


# metrics.csv, summary.csv and the sweep figures: a paired run's go to its keyed folder
TABLES = setting_dir(PAIRED_BLUR, paired_key(config)) if PAIRED else RESULTS


def with_blind(methods, blur):
    """The methods for a blur: each with the true kernel, and for a blind blur also
    '-blind' with the estimated one (the registry's blind methods)."""
    blind = is_blind(blur)
    return [
        f"{m}{s}"
        for m in methods
        for s in ["", "-blind"]
        if not s or (blind and registry.METHODS[m].blind)
    ]


def restored_files(blur, sigma):
    """Every restoration of one (blur, sigma): GMM methods per (m, K), then baselines."""
    return [path for _, path in restorations(blur, sigma)]


def restorations(blur, sigma):
    """(m, K, method) and output file of every restoration of one (blur, sigma)."""
    folder = setting_dir(blur, sigma)
    models = unique(
        (s.patch_size, s.n_components)
        for s in SETTINGS
        if (s.blur, s.noise_sigma) == (blur, sigma)
    )
    items = [
        ((m, k, method), f"{folder}/m{m}_K{k}/{method}.h5")
        for m, k in models
        for method in with_blind(GMM_LIST, blur)
    ]
    items += [
        (("", "", method), f"{folder}/baseline/{method}.h5")
        for method in with_blind(BASELINE_LIST, blur)
    ]
    return items


def evaluation_inputs(wildcards):
    """Restoration scored by evaluate_restoration; for a blind one ('<method>-blind') also
    the kernel estimate it used and the same method restored with the true kernel."""
    folder = f"{RESULTS}/{wildcards.dataset}/{wildcards.blur}_s{wildcards.sigma}"
    restored = f"{folder}/{wildcards.restoration.replace('__', '/')}.h5"
    inputs = {"restored": restored}
    if restored.endswith("-blind.h5"):
        inputs["kernel"] = f"{folder}/kernel_estimate.h5"
        inputs["true_kernel_restored"] = restored[: -len("-blind.h5")] + ".h5"
    return inputs


def blind_evaluation_args(wildcards, input):
    if "kernel" not in input.keys():
        return ""
    return (
        f"--kernel-estimate {shlex.quote(input.kernel)}"
        f" --true-kernel-restored {shlex.quote(input.true_kernel_restored)}"
    )


def expected_metrics():
    """(row of sweep_status.csv without status, metrics file) of every scored setting."""
    expected = []
    for blur, sigma in NOISE_SETTINGS:
        folder = setting_dir(blur, sigma)
        items = [(("", "", "corrupted"), f"{folder}/corrupted.h5")]
        for (m, k, method), path in items + restorations(blur, sigma):
            subfolder, name = os.path.split(os.path.relpath(path, folder))
            if subfolder:
                metrics = f"{folder}/metrics/{subfolder}__{name[:-3]}.csv"
            else:
                metrics = f"{folder}/metrics/{name[:-3]}.csv"
            row = {
                "dataset": DATASET,
                "blur": blur,
                "noise_sigma": sigma,
                "patch_size": m,
                "n_components": k,
                "method": method,
            }
            expected.append((row, metrics))
    return expected


def metric_files():
    return [path for _, path in expected_metrics()]


def write_sweep_status(path=f"{RESULTS}/sweep_status.csv"):
    """List every expected setting x method with this run's outcome (ok, failed, not run;
    gmmrestore.runstatus reads it from Snakemake's DAG and failed jobs); called when the
    workflow ends (onsuccess / onerror).  Returns the summary line."""
    return runstatus.write_status(workflow, expected_metrics(), path)


def lock_results_dir():
    """Hold the lock of RESULTS for the rest of the run (gmmrestore.runlock); called by
    onstart, i.e. in the main Snakemake process only, when jobs are about to run."""
    try:
        runlock.acquire(RESULTS)
    except runlock.ResultsFolderBusy as err:
        raise WorkflowError(f"error: {err}") from None


def print_run_warnings():
    """The end-of-run "warnings" block (stage | setting | message) of the jobs that ran,
    on stderr; all logs' warnings go to <results_dir>/warnings.csv (runwarnings)."""
    block = report_warnings(RESULTS, RUN_STARTED)
    if block:
        print(block, file=sys.stderr)


def load_run_warnings(path=f"{RESULTS}/warnings.csv", limit=30):
    """(stage, setting, message) rows of the last run's warnings.csv, for the report's
    workflow description (its template sees only the config)."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [(r["stage"], r["setting"], r["message"]) for r in csv.DictReader(fh)]
    return list(dict.fromkeys(rows))[:limit]


config["_run_warnings"] = load_run_warnings()


def all_targets():
    targets = [
        f"{TABLES}/metrics.csv",
        f"{TABLES}/summary.csv",
    ]
    targets += [f"{RESULTS}/figures/gmm_{DATASET}_m{m}_K{k}.png" for m, k in GMM_MODELS]
    targets += [
        f"{RESULTS}/figures/examples_{DATASET}_{blur}_s{sigma}.png"
        for blur, sigma in NOISE_SETTINGS
    ]
    targets += [
        f"{RESULTS}/figures/kernels_{DATASET}_{blur}_s{sigma}.png"
        for blur, sigma in NOISE_SETTINGS
        if is_blind(blur)
    ]
    for parameter in SWEEP_PARAMETERS:
        if len(unique(getattr(s, parameter) for s in SETTINGS)) > 1:
            targets.append(f"{TABLES}/figures/sweep_psnr_vs_{parameter}.png")
    return targets


def dataset_args():
    ds = config["dataset"]
    # a paired set brings its own test images; the training source's test split is then
    # unused and kept to one image (a dataset file's splits must not be empty)
    n_test = 1 if PAIRED else ds["n_test"]
    args = [
        f"--source {training_source(ds)}",
        f"--name {ds['name']}",
        f"--cache-dir {shlex.quote(ds['cache_dir'])}",
        f"--n-train {ds['n_train']}",
        f"--n-validation {ds['n_validation']}",
        f"--n-test {n_test}",
        f"--seed {config['seed']}",
        f"--deadline {ds['download_timeout_s']}",
    ]
    if training_source(ds) in ("folder", "natural"):
        args.append(f"--image-size {ds['image_size']}")
    args += [f"--mirror {shlex.quote(url)}" for url in ds["mirrors"]]
    if training_source(ds) == "bsd":
        bsd = ds["bsd"]
        args += [f"--train-set {bsd['train_set']} --test-set {bsd['test_set']}"]
        args += [
            f"--test-image {shlex.quote(name)}" for name in bsd.get("test_images", [])
        ]
        args += [f"--crop {bsd['crop']}"] if "crop" in bsd else []
    if ds.get("folder"):
        args.append(f"--folder {shlex.quote(ds['folder'])}")
    if not ds["allow_offline_fallback"]:
        args.append("--no-offline-fallback")
    return " ".join(args)


def published_args():
    """collect_metrics.py options that list published PSNRs next to the measured ones:
    whole BSD68 test images, for the identity blurs (denoising)."""
    ds = config["dataset"]
    if ds["source"] != "bsd" or ds["bsd"]["test_set"] != "BSD68" or "crop" in ds["bsd"]:
        return ""
    blurs = [name for name, b in config["blurs"].items() if b["type"] == "identity"]
    return " ".join(
        ["--published bsd68_denoising"] + [f"--denoising-blur {b}" for b in blurs]
    )


def paired_folder(wildcards):
    """Inputs of import_paired: the paired set's W.npy and image folders."""
    folder = config["dataset"]["paired"]["folder"]
    return {
        "matrix": os.path.join(folder, "W.npy"),
        "original": os.path.join(folder, "original"),
        "corrupted": os.path.join(folder, "corrupted"),
    }


def paired_args():
    """Options of import_paired.py from dataset.paired ('' for other sources)."""
    if not PAIRED:
        return ""
    ds = config["dataset"]
    return " ".join(
        [
            f"--folder {shlex.quote(ds['paired']['folder'])}",
            f"--sigma {shlex.quote(str(ds['paired']['noise_sigma']))}",
            f"--intensity {ds['paired']['intensity']}",
            f"--unmatched {ds['paired']['unmatched']}",
            f"--name {ds['name']}",
            f"--n-test {ds['n_test']}",
            f"--seed {config['seed']}",
        ]
    )


def blur_args(wildcards):
    spec = config["blurs"][wildcards.blur]
    args = [
        f"--blur-name {wildcards.blur}",
        f"--blur-type {spec['type']}",
        f"--blur-size {spec['size']}",
        f"--blur-std {spec['std']}",
        f"--blur-length {spec['length']}",
        f"--blur-angle {spec['angle']}",
        f"--blur-seed {spec['seed']}",
    ]
    if spec["type"] == "matrix":
        args.append(f"--patch-matrix {shlex.quote(spec['path'])}")
    return " ".join(args)


def corruption_args():
    c = config["corruption"]
    args = [f"--boundary {c['boundary']}"]
    if c["valid_margin"] is not None:
        args.append(f"--valid-margin {c['valid_margin']}")
    if c["quantize_bits"] is not None:
        args.append(f"--quantize-bits {c['quantize_bits']}")
    return " ".join(args)


def gmm_args():
    g = config["gmm"]
    args = [
        f"--max-iter {g['max_iter']}",
        f"--tol {g['tol']}",
        f"--reg-covar {g['reg_covar']}",
        f"--init {g['init']}",
        f"--n-init {g['n_init']}",
        f"--dtype {g['dtype']}",
        f"--memory-budget-mb {g['memory_budget_mb']}",
        f"--seed {config['seed']}",
    ]
    if g["remove_dc"]:
        args.append("--remove-dc")
    return " ".join(args)


def gmm_threads(wildcards):
    """BLAS threads for EM, from its cost of about 4 N K d^2 flops per iteration: one thread
    per 2 GFLOP, 1 to 8 (capped by --cores locally and by --max-threads everywhere)."""
    flops = (
        4 * config["patches"]["max_patches"] * int(wildcards.K) * int(wildcards.m) ** 4
    )
    return int(min(8, max(1, flops // 2e9)))


def image_gmm_args():
    p = config["restore"]["image_prior"]
    return (
        f"--max-iter {p['max_iter']} --tol {p['tol']} --reg-covar {p['reg_covar']}"
        f" --seed {config['seed']}"
    )


def image_gmm_input(wildcards):
    """The whole-image mixture of a method that needs one (registry: 'image_gmm', e.g.
    epll_image_prior); nothing for the others."""
    if "image_gmm" not in registry.METHODS[wildcards.method].needs:
        return []
    K = config["restore"]["image_prior"]["n_components"]
    return f"{RESULTS}/{wildcards.dataset}/gmm/images_K{K}.h5"


def estimated_kernel_input(wildcards):
    """The kernel estimate of a '-blind' restoration (nothing with the true kernel)."""
    if not wildcards.blind:
        return []
    return f"{RESULTS}/{wildcards.dataset}/{wildcards.blur}_s{wildcards.sigma}/kernel_estimate.h5"


def estimated_kernel_arg(wildcards, input):
    return f"--kernel-file {shlex.quote(input.kernel)} " if input.kernel else ""


def image_gmm_arg(wildcards, input):
    return f"--image-gmm {shlex.quote(input.image_gmm)}" if input.image_gmm else ""


RESTORE_PARAMS = {
    # options of restore_images.py for one method (and the plugins that register methods)
    "method_args": {
        m: " ".join(
            [registry.METHODS[m].script_args(config["restore"])]
            + [f"--plugin {shlex.quote(p)}" for p in PLUGINS if m in PLUGIN_METHODS]
        ).strip()
        for m in GMM_LIST
    },
    "clip": "" if config["restore"]["clip"] else "--no-clip",
    "chunk": config["restore"]["images_per_chunk"],
}


def restore_mem_mb(wc, input):
    # one chunk of images: patches, quadratic features, estimates (float64)
    m = int(wc.m)
    chunk_patches = config["restore"]["images_per_chunk"] * 1024
    return 1500 + int(4 * input.size_mb) + int(chunk_patches * m**4 * 8 / 1e6)


onstart:
    lock_results_dir()
