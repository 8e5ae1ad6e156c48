"""Paths and lookups shared across sdgas."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]


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


def sdgas_default_cfg() -> dict:
    """ultralytics' default arguments extended by sdgas' own keys (cfg/default.yaml)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.utils import YAML

    return {**DEFAULT_CFG_DICT, **YAML.load(CFG_DIR / "default.yaml")}


def sdgas_only_keys() -> set:
    """Keys sdgas adds to ultralytics' arguments; stripped before stock validators/predictors/exporters see them."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return set(sdgas_default_cfg()) - set(DEFAULT_CFG_DICT)
