"""Paths and lookups shared across sdgas."""

import os
from functools import lru_cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
OMP_THREADS_AT_IMPORT = os.environ.get("OMP_NUM_THREADS")  # read before `import ultralytics` sets it to "1"


def cpu_inference_threads() -> int:
    """Torch threads for prediction and standalone validation on the CPU: OMP_NUM_THREADS if it was set before sdgas
    was imported, else the physical cores this process may run on (torch's own default).

    ultralytics' `select_device` sets cpu_count - 1 threads, its choice for training beside dataloader workers: one
    thread on a 2-core machine (docs/cpu_inference_forms.md).
    """
    if OMP_THREADS_AT_IMPORT and OMP_THREADS_AT_IMPORT.isdigit():
        return max(1, int(OMP_THREADS_AT_IMPORT))
    import psutil

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(usable, psutil.cpu_count(logical=False) or usable))


def use_cpu_inference_threads(device) -> None:
    """On a CPU device, set torch's threads to `cpu_inference_threads()` (after ultralytics' device selection)."""
    if device.type == "cpu":
        import torch

        torch.set_num_threads(cpu_inference_threads())


def cpu_flags() -> set:
    """The CPU feature flags of this machine (/proc/cpuinfo; empty where unavailable)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1] for line in lines if line.startswith("flags")), "").split())


def bf16_supported() -> bool:
    """Whether this CPU runs BF16 matmuls and convolutions natively (AVX512-BF16 or AMX), as oneDNN needs."""
    import torch

    return torch.backends.mkldnn.is_available() and bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _find_cfg_dir() -> Path:
    """The cfg/ tree: inside the package when installed as a wheel, beside it in a source checkout."""
    for candidate in (PACKAGE_DIR / "cfg", PACKAGE_DIR.parent / "cfg"):
        if (candidate / "models").is_dir():
            return candidate
    raise FileNotFoundError(f"sdgas cfg/ directory not found near {PACKAGE_DIR}; the installation is incomplete")


CFG_DIR = _find_cfg_dir()
MODELS_DIR = CFG_DIR / "models"
DATASETS_DIR = CFG_DIR / "datasets"
DEMO_DATA = DATASETS_DIR / "neu-det-demo.yaml"
WEIGHTS_DIR = CFG_DIR / "weights"  # trained models shipped with sdgas, weights-only (.safetensors)
WEIGHTS_SUFFIXES = (".pt", ".safetensors")


def packaged_weights(name) -> "Path | None":
    """The shipped weights file a bare name means (`sdgasnet-neu.pt`, `.safetensors` or no suffix), else None.

    Only bare names qualify: a name with a folder is the user's own path, and a local file of the same name wins
    (the caller looks for it first), as with ultralytics' `yolo11n.pt`.
    """
    path = Path(str(name))
    if path.name != str(name) or not path.name:
        return None
    stem = path.stem if path.suffix in WEIGHTS_SUFFIXES else path.name
    candidate = WEIGHTS_DIR / f"{stem}.safetensors"
    return candidate if candidate.is_file() else None


def find_weights(name) -> "str | None":
    """`name` itself when that file or folder exists, else the shipped weights a bare name means, else None."""
    if Path(str(name)).exists():
        return str(name)
    shipped = packaged_weights(name)
    return str(shipped) if shipped else None


def is_packaged(file) -> bool:
    """Whether `file` is one of the weights shipped inside sdgas (never rewritten: results go to a copy)."""
    return Path(file).resolve().parent == WEIGHTS_DIR.resolve()


def packaged_weight_names() -> list:
    """The bare names of the shipped weights (`sdgasnet-neu.pt`, ...), for messages and help."""
    return sorted(f"{p.stem}.pt" for p in WEIGHTS_DIR.glob("*.safetensors"))


def resolve_cfg_file(name, folder: Path, kind: str) -> Path:
    """Find `name` as given (absolute or relative to the cwd), else by bare name in sdgas' packaged `folder`.

    Raises FileNotFoundError naming every place looked in, so no caller falls through to a download attempt.
    """
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    for candidate in (folder / path.name, folder / f"{path.name}.yaml"):
        if candidate.is_file():
            return candidate
    available = ", ".join(sorted(p.name for p in folder.glob("*.yaml")))
    raise FileNotFoundError(f"{kind} '{name}' not found (looked in the current directory and {folder}; "
                            f"packaged {kind}s: {available})")


@lru_cache(maxsize=1)
def _sdgas_cfg() -> dict:
    from ultralytics.utils import YAML

    return YAML.load(CFG_DIR / "default.yaml")


def sdgas_default_cfg() -> dict:
    """ultralytics' default arguments extended by sdgas' own keys (cfg/default.yaml, the one home of every default)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return {**DEFAULT_CFG_DICT, **_sdgas_cfg()}


def sdgas_only_keys() -> set:
    """Keys sdgas adds to ultralytics' arguments; stripped before stock validators/predictors/exporters see them.
    (cfg/default.yaml also resets some stock keys, the loss gains box/cls/dfl: those are ultralytics' and stay.)"""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return set(_sdgas_cfg()) - set(DEFAULT_CFG_DICT)


def sdgas_setting(args, key: str):
    """An sdgas argument from `args` (a dict or namespace, possibly without the key), else its cfg/default.yaml value."""
    value = (args if isinstance(args, dict) else vars(args) if args is not None else {}).get(key)
    return _sdgas_cfg()[key] if value is None else value


def strip_sdgas_keys(args, keep=()):
    """A copy of the arguments (a dict or namespace) without sdgas' own keys, except `keep`: stock validators,
    predictors and exporters reject keys they do not know."""
    from copy import copy

    args = copy(args)
    fields = args if isinstance(args, dict) else vars(args)
    for key in sdgas_only_keys() - set(keep):
        fields.pop(key, None)
    return args
