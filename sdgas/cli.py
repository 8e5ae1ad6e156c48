"""The `sdgas` command: ultralytics' `key=value` grammar over the SDGAS model and sdgas' own tools.

    sdgas train model=sdgasnet.yaml data=neu-det.yaml epochs=180 imgsz=640
    sdgas val model=best.pt data=neu-det.yaml
    sdgas predict model=best.pt source=images/
    sdgas export model=best.pt format=onnx
    sdgas check data=neu-det.yaml          sdgas convert ...        sdgas benchmark ...
    sdgas help | version | settings | cfg

Exit code 0 on success; on failure one line on stderr naming the problem and a non-zero code.
"""

import importlib
import sys

from ultralytics.cfg import handle_yolo_settings, merge_equals_args, parse_key_value_pair

from sdgas import __version__
from sdgas.engine.model import SDGAS
from sdgas.utils import CFG_DIR, sdgas_default_cfg, sdgas_only_keys, strip_sdgas_keys

MODEL_MODES = ("train", "val", "predict", "export")
# sdgas' own commands: "module:function", called with the parsed key=value dict, returning an exit code
TOOL_COMMANDS = {
    "check": "sdgas.data.check:cli",
    "convert": "sdgas.data.convert:cli",
    "benchmark": "sdgas.tools.benchmark:cli",
    "heatmap": "sdgas.tools.heatmap:cli",
}
DEFAULT_MODEL = {"train": "sdgasnet.yaml", "predict": "sdgasnet-neu.pt"}  # predict: the shipped NEU-DET weights
MODE_KEYS = {"val": ("paper_eval", "recall", "escape_rate", "tile"), "predict": ("tile",),  # sdgas keys beyond train
             "export": ("int8",)}


def usage() -> str:
    return (f"sdgas {__version__}: SD-GASNet surface-defect detection.\n{__doc__}\n"
            f"Modes: {', '.join(MODEL_MODES + tuple(TOOL_COMMANDS))}. Arguments: ultralytics' train/val/predict/"
            f"export keys plus sdgas' own ({CFG_DIR / 'default.yaml'}); `sdgas cfg` lists them all.")


def parse_overrides(words: list) -> dict:
    """`key=value` words -> dict (values typed as ultralytics does); a bare boolean key means key=True."""
    defaults, overrides = sdgas_default_cfg(), {}
    for word in merge_equals_args(words):
        if "=" in word:
            key, value = parse_key_value_pair(word)
            overrides[key] = value
        elif isinstance(defaults.get(word), bool):
            overrides[word] = True
        else:
            raise SyntaxError(f"'{word}' is not a key=value argument")
    return overrides


def check_arguments(overrides: dict):
    """Unknown keys get ultralytics' suggestions; stock keys are type-checked by ultralytics, sdgas keys here."""
    from ultralytics.cfg import check_cfg, check_dict_alignment
    from ultralytics.utils import LOGGER

    defaults = sdgas_default_cfg()
    LOGGER.disabled = True  # check_dict_alignment prints the whole `yolo` help page before raising
    try:
        check_dict_alignment(defaults, overrides)
    finally:
        LOGGER.disabled = False
    check_cfg({k: v for k, v in overrides.items() if k not in sdgas_only_keys()})
    for key in sdgas_only_keys() & overrides.keys():
        default, value = defaults[key], overrides[key]
        if default is not None and value is not None and not isinstance(value, type(default)) and not (
                isinstance(default, (float, bool)) and isinstance(value, int)):  # tile=N: a bool key taking a size
            raise TypeError(f"'{key}={value}' must be of type {type(default).__name__}")


def run_model_mode(mode: str, overrides: dict):
    check_arguments(overrides)
    model = overrides.pop("model", None) or DEFAULT_MODEL.get(mode)
    trust = overrides.pop("trust", False)  # opt out of the checkpoint allow-list for this model file
    if model is None:
        raise ValueError(f"'sdgas {mode}' needs model=, e.g. model=runs/detect/train/weights/best.pt")
    if mode != "train":  # training-only keys: stock modes reject them
        overrides = strip_sdgas_keys(overrides, keep=MODE_KEYS.get(mode, ()))
    if mode == "predict":
        overrides.setdefault("save", True)  # as `yolo predict`: ultralytics saves by default only for its own CLI
    getattr(SDGAS(model, trust=trust), mode)(**overrides)


def run_tool(mode: str, overrides: dict) -> int:
    module, func = TOOL_COMMANDS[mode].split(":")
    return int(getattr(importlib.import_module(module), func)(overrides) or 0)


def main(argv: list) -> int:
    if not argv or argv[0] in ("help", "-h", "--help"):
        print(usage())
        return 0
    mode, words = argv[0], argv[1:]
    if mode in ("version", "-v", "--version"):
        print(__version__)
        return 0
    if mode == "settings":
        handle_yolo_settings(words)
        return 0
    if mode == "cfg":
        for key, value in sdgas_default_cfg().items():
            print(f"{key}: {value}")
        return 0
    if mode not in MODEL_MODES and mode not in TOOL_COMMANDS:
        raise ValueError(f"unknown mode '{mode}'; valid modes are {', '.join(MODEL_MODES + tuple(TOOL_COMMANDS))}")
    overrides = parse_overrides(words)
    if mode in TOOL_COMMANDS:
        return run_tool(mode, overrides)
    run_model_mode(mode, overrides)
    return 0


def entrypoint():
    """Console-script entry: exit 0 on success, else one line on stderr and exit 1 (2 for bad arguments)."""
    try:
        code = main(sys.argv[1:])
    except KeyboardInterrupt:
        code = 130
    except (SyntaxError, TypeError) as e:
        print(f"sdgas: error: {one_line(e)}", file=sys.stderr)
        code = 2
    except Exception as e:  # noqa: BLE001 - the CLI turns every failure into one readable line
        print(f"sdgas: error: {type(e).__name__}: {one_line(e)}", file=sys.stderr)
        code = 1
    sys.exit(code)


def one_line(e: Exception) -> str:
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    return " ".join(lines) if lines else type(e).__name__


if __name__ == "__main__":
    entrypoint()
