"""Hostile checkpoints built from raw pickle opcodes and zip bytes, one per route by which a file could run code or
exhaust the machine while being loaded. Each would `touch marker` or allocate gigabytes if loaded naively.

`write_corpus(folder, genuine, marker)` writes them all and returns {case: (path, words the refusal must contain)}.
"""

import json
import pickle
import struct
import zipfile
from pathlib import Path

import torch

PROTO2 = b"\x80\x02"


# ---------------------------------------------------------------------------------------------------------------------
# opcodes


def glob(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def text(s: str) -> bytes:
    b = s.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(b)) + b


def integer(n: int) -> bytes:
    if -(2 ** 31) <= n < 2 ** 31:
        return pickle.BININT + struct.pack("<i", n)
    b = pickle.encode_long(n)
    return pickle.LONG1 + bytes([len(b)]) + b


def mapping(*pairs) -> bytes:
    """A dict from (key opcodes, value opcodes) pairs."""
    return pickle.EMPTY_DICT + pickle.MARK + b"".join(k + v for k, v in pairs) + pickle.SETITEMS


def layer(cls=("torch.nn.modules.linear", "Identity")) -> bytes:
    """An admitted layer restored the way pickle restores objects (NEWOBJ, no constructor call)."""
    return glob(*cls) + pickle.EMPTY_TUPLE + pickle.NEWOBJ


def checkpoint(model: bytes) -> bytes:
    """{'model': <model>} as a complete pickle."""
    return PROTO2 + mapping((text("model"), model)) + pickle.STOP


def hostile_yaml(marker) -> bytes:
    """A model dict whose activation string runs `touch marker` when ultralytics evaluates it."""
    act = f"__import__('os').system('touch {marker}')"
    return mapping((text("activation"), text(act)), (text("nc"), integer(1)),
                   (text("backbone"), pickle.EMPTY_LIST), (text("head"), pickle.EMPTY_LIST))


# ---------------------------------------------------------------------------------------------------------------------
# archives


def torch_zip(path: Path, data_pkl: bytes, records: dict = None) -> Path:
    """A zip archive as torch.save writes it, holding `data_pkl` as its pickle."""
    writer = torch._C.PyTorchFileWriter(str(path))
    for name, data in {"data.pkl": data_pkl, "byteorder": b"little", "version": b"3\n", **(records or {})}.items():
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    return path


def deflate_bomb(path: Path, data_pkl: bytes, gib: int = 2) -> Path:
    """A torch-style archive whose storage entry inflates from a few MB to `gib` GiB (deflate, zip64)."""
    zeros = bytes(64 << 20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        with z.open("archive/data/0", "w", force_zip64=True) as f:
            for _ in range(gib * 16):
                f.write(zeros)
    return path


def torchscript(path: Path) -> Path:
    torch.jit.save(torch.jit.script(torch.nn.ReLU()), str(path))
    return path


# ---------------------------------------------------------------------------------------------------------------------
# the corpus


def write_corpus(folder: Path, genuine: Path, marker: Path) -> dict:
    """{case: (path, words the one-line refusal must contain)} for every route; `genuine` is a trained best.pt."""
    folder.mkdir(parents=True, exist_ok=True)
    sdgas_model = ("sdgas.nn.tasks", "SDGASDetectionModel")
    cases = {
        # 1. instance attributes the unpickler calls: BUILD plants a method, a later opcode calls it
        "build-setstate": (checkpoint(layer() + mapping((text("__setstate__"), glob(*sdgas_model))) + pickle.BUILD
                                      + hostile_yaml(marker) + pickle.BUILD), "__setstate__"),
        "build-append": (checkpoint(layer() + mapping((text("append"), glob(*sdgas_model))) + pickle.BUILD
                                    + hostile_yaml(marker) + pickle.APPEND), "append to lists"),
        "build-extend": (checkpoint(layer() + mapping((text("extend"), glob(*sdgas_model))) + pickle.BUILD
                                    + pickle.MARK + hostile_yaml(marker) + pickle.APPENDS), "append to lists"),
        "build-add": (checkpoint(layer() + mapping((text("add"), glob(*sdgas_model))) + pickle.BUILD
                                 + pickle.MARK + hostile_yaml(marker) + pickle.ADDITEMS), "Unsupported operand"),
        # ... and the plain ways: a call of an admitted class or of a foreign global with file-chosen arguments
        "reduce-model-class": (checkpoint(glob(*sdgas_model) + hostile_yaml(marker) + pickle.TUPLE1 + pickle.REDUCE),
                               "SDGASDetectionModel with arguments"),
        "reduce-huge-layer": (checkpoint(glob("torch.nn.modules.linear", "Linear") + integer(100_000)
                                         + integer(100_000) + pickle.TUPLE2 + pickle.REDUCE), "Linear with arguments"),
        "reduce-autobackend": (checkpoint(glob("ultralytics.nn.autobackend", "AutoBackend") + text("x.torchscript")
                                          + pickle.TUPLE1 + pickle.REDUCE), "AutoBackend"),
        "reduce-system": (checkpoint(glob("os", "system") + text(f"touch {marker}") + pickle.TUPLE1 + pickle.REDUCE),
                          "os.system"),
        "inst-opcode": (checkpoint(pickle.MARK + text(f"touch {marker}") + pickle.INST + b"os\nsystem\n"),
                        "Unsupported operand"),
        # 5. unbounded cost from a few bytes
        "bytearray-3e9": (checkpoint(glob("builtins", "bytearray") + integer(3_000_000_000) + pickle.TUPLE1
                                     + pickle.REDUCE), "builtins.bytearray"),
        "colliding-keys": (checkpoint(pickle.EMPTY_DICT + pickle.MARK + b"".join(
            integer(k * (2 ** 61 - 1)) + pickle.NONE for k in range(1, 80_001)) + pickle.SETITEMS), "-bit integer"),
        "deep-nesting": (checkpoint(pickle.EMPTY_LIST * 100_000 + pickle.APPEND * 99_999), "levels deep"),
    }
    paths = {}
    for name, (data, words) in cases.items():
        paths[name] = (torch_zip(folder / f"{name}.pt", data), words)
    paths["deflate-bomb"] = (deflate_bomb(folder / "deflate-bomb.pt", checkpoint(pickle.NONE)), "expand to")
    # 2. TorchScript: as a .pt, and appended to a genuine checkpoint (two archives, two readers' views)
    ts = torchscript(folder / "scripted.torchscript")
    (folder / "scripted.pt").write_bytes(ts.read_bytes())
    paths["torchscript-pt"] = (folder / "scripted.pt", "TorchScript")
    (folder / "polyglot.pt").write_bytes(Path(genuine).read_bytes() + ts.read_bytes())
    paths["torchscript-polyglot"] = (folder / "polyglot.pt", "not a loadable PyTorch checkpoint")
    paths["torchscript-file"] = (ts, "TorchScript")
    paths.update(_genuine_based(folder, genuine, marker))
    return paths


def _genuine_based(folder: Path, genuine: Path, marker: Path) -> dict:
    """Cases that need a real model around the payload: shadowed methods, fake hooks, hostile YAML layers."""
    ckpt = torch.load(genuine, map_location="cpu", weights_only=False)  # our own file, built by the test
    model = ckpt["model"]
    out = {}

    def save(name, words):
        torch.save(ckpt, folder / f"{name}.pt")
        out[name] = (folder / f"{name}.pt", words)

    model.fuse = torch.device  # called by ultralytics' loader as model.fuse()
    save("shadowed-method", "replaces the method 'fuse'")
    del model.fuse
    model.model[0]._forward_hooks[99] = set  # called on every forward
    save("fake-hook", "in _forward_hooks")
    del model.model[0]._forward_hooks[99]
    from ultralytics.utils.loss import v8DetectionLoss

    criterion = v8DetectionLoss.__new__(v8DetectionLoss)  # a loss object, as training would reuse it
    criterion.bbox_decode = torch.device
    model.criterion = criterion
    save("shadowed-loss-method", "replaces the method 'bbox_decode'")
    model.criterion = None
    evil_yaml = folder / "evil.yaml"
    evil_yaml.write_text(f"nc: 1\nactivation: __import__('os').system('touch {marker}')\nbackbone: []\nhead: []\n")
    yaml = dict(model.yaml)
    model.yaml = {**yaml, "backbone": [[-1, 1, "DetectionModel", [str(evil_yaml)]], *yaml["backbone"][1:]]}
    save("yaml-model-layer", "DetectionModel")
    model.yaml = {**yaml, "width_multiple": 20.0}
    save("yaml-width-20", "width_multiple=20.0")
    model.yaml = {**yaml, "scales": {"s": [1.0, 20.0, 1024]}, "scale": "s"}
    save("yaml-scale-width-20", "width_multiple=20.0")
    model.yaml = yaml
    return out


def write_safetensors_corpus(folder: Path, genuine_safetensors: Path, marker: Path) -> dict:
    """Weights-only files whose JSON config asks for a whole model as a layer or for gigabytes of layers."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(genuine_safetensors), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    yaml = json.loads(meta["model_yaml"])
    evil_yaml = folder / "evil.yaml"
    evil_yaml.write_text(f"nc: 1\nactivation: __import__('os').system('touch {marker}')\nbackbone: []\nhead: []\n")
    variants = {
        "st-model-layer": ({**yaml, "backbone": [[-1, 1, "DetectionModel", [str(evil_yaml)]]]}, "DetectionModel"),
        "st-width-20": ({**yaml, "width_multiple": 20}, "width_multiple=20"),
        "st-n-1000": ({**yaml, "backbone": [[r[0], 1000, r[2], r[3]] for r in yaml["backbone"]]}, "1000 times"),
    }
    out = {}
    for name, (y, words) in variants.items():
        save_file(tensors, str(folder / f"{name}.safetensors"), metadata={**meta, "model_yaml": json.dumps(y)})
        out[name] = (folder / f"{name}.safetensors", words)
    return out
