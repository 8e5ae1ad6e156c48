"""Weights-only model files: `.safetensors` tensors plus a JSON config, no pickled code.

`sdgas export model=best.pt format=safetensors` writes `best.safetensors`; `SDGAS("best.safetensors")` rebuilds the
model from the embedded config (the model YAML, class names, a few arguments) and loads the tensors into it. The file is
a JSON header and raw tensor bytes; loading it never unpickles anything, and the embedded YAML is checked like a
checkpoint's (`check_model_yaml`) before the model is built, because ultralytics' builder evaluates parts of it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from sdgas.io.checkpoint import CheckpointError, check_model_yaml, checkpoint_model, load_checkpoint_dict
from sdgas.io.saving import atomic_write_bytes
from sdgas.nn.tasks import SDGASDetectionModel

FORMAT = "sdgas-safetensors/1"
MODEL_ARGS = ("imgsz", "data", "task", "single_cls")  # what ultralytics keeps of a checkpoint's args on load


def _builders() -> dict:
    """Model classes a weights file may name (the name is checked against this map; nothing else is built)."""
    from ultralytics.nn.tasks import DetectionModel

    return {"SDGASDetectionModel": SDGASDetectionModel, "DetectionModel": DetectionModel}


def _jsonable(x):
    """YAML/args values as JSON: tuples to lists, paths and other objects to strings."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x if x is None or isinstance(x, (bool, int, float, str)) else str(x)


def export_safetensors(model: torch.nn.Module, file, half: bool = False) -> str:
    """Write `model`'s tensors and the config needed to rebuild it to `file` (.safetensors); return the path."""
    from safetensors.torch import save_file

    builder = type(model).__name__
    if builder not in _builders():
        raise TypeError(f"weights-only export supports {', '.join(_builders())} models, not {builder}")
    yaml = dict(model.yaml)
    if yaml.get("yaml_file"):
        yaml["yaml_file"] = Path(yaml["yaml_file"]).name  # no local paths in the file
    args = model.args if isinstance(model.args, dict) else vars(model.args)
    dtype = torch.float16 if half else torch.float32
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "builder": builder,
        "model_yaml": json.dumps(_jsonable(yaml)),
        "names": json.dumps(_jsonable(model.names)),
        "args": json.dumps(_jsonable({k: args[k] for k in MODEL_ARGS if k in args})),
        "fused": json.dumps(bool(model.is_fused())),
        "class_conf": json.dumps(getattr(model, "class_conf", None) or {}),
    }
    file = Path(file).with_suffix(".safetensors")
    file.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(file), metadata=metadata)
    return str(file)


def read_safetensors(file) -> tuple[dict, dict]:
    """(tensors, metadata) of a weights file; one-line CheckpointError for a damaged or foreign file."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises several error types for unreadable files
        raise CheckpointError(f"'{file}' is not a readable .safetensors file ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:160]})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"'{file}' is a .safetensors file without an sdgas model config (format "
                              f"'{metadata.get('format')}'); export it with `sdgas export format=safetensors`")
    return tensors, metadata


def load_safetensors(file) -> torch.nn.Module:
    """Rebuild the model a weights file describes and load its tensors: an eval-mode FP32 model, as load_checkpoint
    returns."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    tensors, meta = read_safetensors(file)
    try:
        yaml, names, args = json.loads(meta["model_yaml"]), json.loads(meta["names"]), json.loads(meta["args"])
        builder, fused = _builders()[meta["builder"]], json.loads(meta.get("fused", "false"))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"'{file}' has a damaged sdgas config ({type(e).__name__}: {e})") from None
    check_model_yaml(yaml, file)
    model = builder(yaml, ch=yaml.get("channels", 3), nc=yaml.get("nc"), verbose=False)
    if fused:
        model.fuse(verbose=False)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = next((s.strip() for s in str(e).splitlines()[1:] if s.strip()), str(e))
        raise CheckpointError(f"'{file}': its tensors do not fit the model its config describes ({first[:160]})") \
            from None
    model.names = {int(k): v for k, v in names.items()} if isinstance(names, dict) else dict(enumerate(names))
    model.args = {**DEFAULT_CFG_DICT, **args}
    model.pt_path, model.task = str(file), args.get("task", "detect")
    model.class_conf = parse_class_conf(meta.get("class_conf"), file)
    return model.float().eval()


def parse_class_conf(value, file) -> dict:
    """Per-class thresholds from file metadata (JSON or a Python literal, as exported formats store them), as
    {class: confidence}."""
    import ast

    if not value:
        return {}
    try:
        raw = ast.literal_eval(value) if isinstance(value, str) else value  # JSON and Python dict literals alike
        return {int(k): float(v) for k, v in dict(raw).items() if 0.0 <= float(v) <= 1.0}
    except (ValueError, TypeError, SyntaxError):
        raise CheckpointError(f"'{file}' has damaged per-class thresholds ({str(value)[:80]})") from None


def write_class_conf(file, class_conf: dict) -> None:
    """Store per-class thresholds in a .pt checkpoint (on its model) or a .safetensors file (in its metadata),
    rewriting the file atomically."""

    file, class_conf = Path(file), {int(k): float(v) for k, v in class_conf.items()}
    if file.suffix == ".safetensors":
        from safetensors.torch import save

        tensors, meta = read_safetensors(file)
        atomic_write_bytes(file, save(tensors, metadata={**meta, "class_conf": json.dumps(class_conf)}))
        return
    ckpt = load_checkpoint_dict(file)
    for model in {id(m): m for m in (ckpt.get("model"), ckpt.get("ema"), checkpoint_model(ckpt)) if m}.values():
        model.class_conf = class_conf
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    atomic_write_bytes(file, buffer.getvalue())
