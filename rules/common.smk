import itertools
import os

from snakemake.utils import validate

validate(config, "../schemas/config.schema.yaml")

RESULTS = config["results_dir"]
DATASET = config["dataset"]["name"]
SCRIPTS = os.path.join(workflow.basedir, "scripts")
SWEEP = config["sweep"]
GMM_METHODS = ("mapk", "epll")


def script_path(name):
    """A stage's script, passed as an input so that editing it triggers a rerun."""
    return os.path.join(SCRIPTS, name)


def fmt_sigma(value):
    """Noise level as it appears in paths (0.1 -> '0.1', 0.05 -> '0.05')."""
    return f"{float(value):g}"


def _check_config():
    unknown = [b for b in SWEEP["blur"] if b not in config["blurs"]]
    if unknown:
        raise ValueError(
            f"config: sweep.blur lists {unknown}, not defined under 'blurs' "
            f"(defined: {sorted(config['blurs'])})"
        )
    for name, spec in config["blurs"].items():
        if spec["type"] == "matrix" and not spec.get("path"):
            raise ValueError(f"config: blurs.{name} has type 'matrix' but no 'path'")


_check_config()

SIGMAS = [fmt_sigma(s) for s in SWEEP["noise_sigma"]]
GMM_LIST = [m for m in config["restore"]["methods"] if m in GMM_METHODS]
BASELINE_LIST = [m for m in config["restore"]["methods"] if m not in GMM_METHODS]


wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    blur="[A-Za-z0-9_]+",
    sigma="[0-9.e+-]+",
    m="[0-9]+",
    K="[0-9]+",
    method="[a-z_]+",
    restoration="(m[0-9]+_K[0-9]+|baseline)__[a-z_]+(-blind)?",


def is_blind(blur):
    return bool(config["blurs"][blur].get("blind", False))


def setting_dir(blur, sigma):
    return f"{RESULTS}/{DATASET}/{blur}_s{sigma}"


def gmm_methods(blur):
    """GMM methods for a blur: with the true kernel, and '-blind' with the estimated one."""
    suffixes = ["", "-blind"] if is_blind(blur) else [""]
    return [f"{m}{s}" for m in GMM_LIST for s in suffixes]


def restored_files(blur, sigma):
    """Every restoration of one (blur, sigma): GMM methods per (m, K), then baselines."""
    folder = setting_dir(blur, sigma)
    files = [
        f"{folder}/m{m}_K{k}/{method}.h5"
        for m, k in itertools.product(SWEEP["patch_size"], SWEEP["n_components"])
        for method in gmm_methods(blur)
    ]
    files += [f"{folder}/baseline/{method}.h5" for method in BASELINE_LIST]
    return files


def metric_files():
    files = []
    for blur, sigma in itertools.product(SWEEP["blur"], SIGMAS):
        folder = setting_dir(blur, sigma)
        files.append(f"{folder}/metrics/corrupted.csv")
        for path in restored_files(blur, sigma):
            subfolder, name = os.path.split(os.path.relpath(path, folder))
            files.append(f"{folder}/metrics/{subfolder}__{name[:-3]}.csv")
    return files


def all_targets():
    targets = [
        f"{RESULTS}/metrics.csv",
        f"{RESULTS}/summary.csv",
    ]
    targets += expand(
        f"{RESULTS}/figures/gmm_{DATASET}_m{{m}}_K{{K}}.png",
        m=SWEEP["patch_size"],
        K=SWEEP["n_components"],
    )
    targets += expand(
        f"{RESULTS}/figures/examples_{DATASET}_{{blur}}_s{{sigma}}.png",
        blur=SWEEP["blur"],
        sigma=SIGMAS,
    )
    targets += [
        f"{RESULTS}/figures/kernels_{DATASET}_{blur}_s{sigma}.png"
        for blur in SWEEP["blur"]
        if is_blind(blur)
        for sigma in SIGMAS
    ]
    for parameter, values in (
        ("noise_sigma", SIGMAS),
        ("n_components", SWEEP["n_components"]),
        ("patch_size", SWEEP["patch_size"]),
    ):
        if len(values) > 1:
            targets.append(f"{RESULTS}/figures/sweep_psnr_vs_{parameter}.png")
    return targets


def dataset_args():
    ds = config["dataset"]
    args = [
        f"--source {ds['source']}",
        f"--name {ds['name']}",
        f"--cache-dir {ds['cache_dir']}",
        f"--n-train {ds['n_train']}",
        f"--n-validation {ds['n_validation']}",
        f"--n-test {ds['n_test']}",
        f"--seed {config['seed']}",
    ]
    if ds["source"] in ("folder", "natural"):
        args.append(f"--image-size {ds['image_size']}")
    args += [f"--mirror {url}" for url in ds["mirrors"]]
    if ds.get("folder"):
        args.append(f"--folder {ds['folder']}")
    if not ds["allow_offline_fallback"]:
        args.append("--no-offline-fallback")
    return " ".join(args)


def blur_args(wildcards):
    spec = config["blurs"][wildcards.blur]
    args = [
        f"--blur-name {wildcards.blur}",
        f"--blur-type {spec['type']}",
        f"--blur-size {spec['size']}",
        f"--blur-std {spec['std']}",
        f"--blur-length {spec['length']}",
        f"--blur-angle {spec['angle']}",
    ]
    if spec["type"] == "matrix":
        args.append(f"--patch-matrix {spec['path']}")
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


def epll_args():
    e = config["restore"]["epll"]
    factors = " ".join(str(f) for f in e["beta_factors"])
    return f"--beta-factors {factors} --lam-factor {e['lam_factor']} --n-inner {e['n_inner']}"


RESTORE_PARAMS = {
    "epll": epll_args(),
    "chunk": config["restore"]["images_per_chunk"],
}


def restore_mem_mb(wc, input):
    # one chunk of images: patches, quadratic features, estimates (float64)
    m = int(wc.m)
    chunk_patches = config["restore"]["images_per_chunk"] * 1024
    return 1500 + int(4 * input.size_mb) + int(chunk_patches * m**4 * 8 / 1e6)
