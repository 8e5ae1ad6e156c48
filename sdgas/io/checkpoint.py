"""Checkpoints that cannot run code: the loader every untrusted .pt goes through.

A `.pt` file is a zip archive holding a pickle, and unpickling runs whatever the pickle asks for. sdgas never
unpickles with Python's own machinery: every untrusted load (`SDGAS("x.pt")`, the `sdgas` CLI, resume, pretrained
weights, a distillation teacher, the validator's AutoBackend, the end-of-training strip, and `YOLO("x.pt")` once sdgas
is imported) goes through `load_checkpoint_dict`, which

1. reads the archive with torch's own reader (never `zipfile`, which may see another archive in the same bytes) and
   refuses TorchScript programs, compressed entries and entries larger than the file;
2. reads the pickle's opcodes without executing them (as torch's own global scan does) and refuses globals outside the
   allow-list, dunder names (which would let BUILD replace `__setstate__` on an instance) and integers large enough
   to make a dict's keys collide;
3. unpickles with torch's weights-only unpickler (`torch.load(weights_only=True)`), registering the allow-list through
   ultralytics' own safe-load machinery (`ultralytics.nn.tasks._SafeLoad`). Model classes are registered as
   `RestoreOnly` stand-ins, so pickle can restore a layer (`cls.__new__` then its state) but never call a class with
   arguments from the file (a constructor that builds, downloads or allocates);
4. checks what came out: a detection model whose instances shadow no method with a callable, whose hooks are real
   hooks, whose tensors fit their storage, whose data nests at most MAX_NESTING deep, and whose model YAML (rebuilt
   when training) names only layer classes with bounded sizes.

Anything else is refused with one line naming the file and the reason. `SDGAS(x, trust=True)`, the CLI key
`trust=True` and SDGAS_TRUST_CHECKPOINTS=1 are the explicit opt-out (ultralytics' unrestricted loader; TorchScript).

Writing checkpoints (atomic saves, resume after a kill) is in sdgas/io/saving.py.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import os
import pickle
import re
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn

from sdgas.nn.tasks import SDGAS_MODULES
from sdgas.utils import packaged_weights

TRUST_ENV = "SDGAS_TRUST_CHECKPOINTS"
MAX_NESTING = 100  # containers inside containers; genuine checkpoints stay under 10, Python recurses at 1000
MAX_INT_BITS = 60  # ints hash to themselves below 2**61 - 1, so larger ones are how dict keys are made to collide
DUNDER = re.compile(rb"^__\w+__$")

# classes a checkpoint may restore: nn.Modules defined in these modules, and (CLASS_MODULES) plain classes too
LAYER_PACKAGES = ("torch.nn.modules", "ultralytics.nn.modules", "sdgas.nn.modules")
MODEL_MODULES = ("ultralytics.nn.tasks", "ultralytics.nn.distill_model", "sdgas.nn.tasks",
                 "sdgas.nn.distill_model")
CLASS_MODULES = ("ultralytics.nn.distill_model", "ultralytics.utils.loss", "ultralytics.utils.tal")
# data a genuine checkpoint holds besides its classes: tensors, sizes, dicts, sets, bytes, the args namespace
DATA_GLOBALS = ("collections.OrderedDict", "builtins.set", "builtins.frozenset", "_codecs.encode", "torch.Size",
                "torch.device", "torch.nn.parameter.Parameter", "torch._utils._rebuild_tensor",
                "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
                "torch._utils._rebuild_parameter_with_state", "ultralytics.utils.IterableSimpleNamespace",
                "ultralytics.yolo.utils.IterableSimpleNamespace", "builtins.getattr", "numpy.dtype",
                "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
                *(f"{m}.{c}" for m in ("pathlib", "pathlib._local") for c in ("PosixPath", "WindowsPath")))
LEGACY_ALIASES = {  # names old checkpoints use for classes that moved (ultralytics' own loader maps its own)
    "ultralytics.nn.modules.block.Silence": nn.Identity,
    "ultralytics.nn.tasks.YOLOv10DetectionModel": ("ultralytics.nn.tasks", "DetectionModel"),
    "ultralytics.utils.loss.v10DetectLoss": ("ultralytics.utils.loss", "E2EDetectLoss"),
    "sdgas.models.detect.distill.SelfDistillModel": ("sdgas.nn.distill_model", "SelfDistillModel"),  # sdgas 0.1
}

_TRUSTED_FILES: set[str] = set()
_ULTRALYTICS_TORCH_SAFE_LOAD = None  # ultralytics' own loader, used for trusted files; set by install_safe_loading()


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unsafe, damaged, or not an sdgas/ultralytics detection checkpoint."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that asks for something no genuine checkpoint holds (code, a constructor call, unbounded cost)."""


# ---------------------------------------------------------------------------------------------------------------------
# Trust (the opt-out)


def trust_checkpoint(path):
    """Load `path` with ultralytics' unrestricted loader from now on in this process (the user trusts the file)."""
    _TRUSTED_FILES.add(str(Path(path).resolve()))


def is_trusted(path) -> bool:
    """Whether `path` was trusted explicitly, or all checkpoints are (SDGAS_TRUST_CHECKPOINTS=1)."""
    if os.environ.get(TRUST_ENV, "").strip().lower() in {"1", "true", "yes"}:
        return True
    return str(Path(path).resolve()) in _TRUSTED_FILES


def opt_out_hint(file) -> str:
    """The sentence every refusal of a file's content ends with: the explicit opt-out for a file the user trusts."""
    return f"Only if you trust this file: SDGAS('{file}', trust=True), the CLI key trust=True, or {TRUST_ENV}=1."


def refuse(file, reason: str):
    """The one-line refusal of a file whose content could run code or exhaust the machine."""
    raise UnsafeCheckpointError(f"refusing to load '{file}': {reason}. {opt_out_hint(file)}")


# ---------------------------------------------------------------------------------------------------------------------
# The allow-list, registered with ultralytics' safe-load machinery


class RestoreOnly:
    """Allow-list stand-in for a class: torch's NEWOBJ (`cls.__new__(cls, *args)`) restores an instance of the real
    class, while a REDUCE of it (a call with arguments chosen by the file) is refused. It compares equal to the real
    class, so torch's BUILD check (`type(instance) in allowed`) admits the restored instance."""

    def __init__(self, cls: type):
        self.cls = cls
        self.__new__ = self.restore  # an instance attribute: torch's unpickler looks `__new__` up on this object

    def restore(self, _stand_in, *args):
        return self.cls.__new__(self.cls, *args)

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError(f"a call of {self.cls.__module__}.{self.cls.__qualname__} with arguments")

    def __eq__(self, other):
        return other is self or other is self.cls

    __hash__ = object.__hash__


def module_method(obj, name):
    """`getattr` as fused models pickle it (`m.forward = m.forward_fuse`): a layer's own `forward*` method only."""
    method = getattr(type(obj), name, None) if isinstance(obj, nn.Module) and str(name).startswith("forward") else None
    if not isinstance(method, types.FunctionType):
        raise pickle.UnpicklingError(f"getattr({type(obj).__name__}, {name!r})")
    return method.__get__(obj)


def numpy_scalar(dtype, *args):
    """numpy's scalar reconstructor for plain numeric dtypes only (an object dtype holds arbitrary objects)."""
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError(f"a numpy object scalar ({dtype})")
    return np.float64(0).__reduce__()[0](dtype, *args)


def _restorable_classes() -> dict:
    """'module.Name' -> class for every class a genuine checkpoint may restore, under the name pickle gives it."""
    for name in (*LAYER_PACKAGES, *MODEL_MODULES, *CLASS_MODULES):
        importlib.import_module(name)
    classes, prefixes = {}, LAYER_PACKAGES + MODEL_MODULES + CLASS_MODULES
    for module in [m for n, m in list(sys.modules.items()) if m and any(n == p or n.startswith(f"{p}.")
                                                                        for p in prefixes)]:
        plain_ok = module.__name__ in CLASS_MODULES or module.__name__.startswith("sdgas.")
        for obj in vars(module).values():
            if isinstance(obj, type) and obj.__module__ == module.__name__ and (
                    issubclass(obj, nn.Module) or (plain_ok and not issubclass(obj, BaseException))):
                classes[f"{obj.__module__}.{obj.__qualname__}"] = obj
    for alias, target in LEGACY_ALIASES.items():
        classes[alias] = target if isinstance(target, type) else getattr(importlib.import_module(target[0]), target[1])
    return classes


class AllowList:
    """What a checkpoint may name, built once per process, and its registration with torch (via ultralytics)."""

    _names = _classes = None

    @classmethod
    def names(cls) -> frozenset:
        if cls._names is None:
            cls._classes = _restorable_classes()
            cls._names = frozenset(DATA_GLOBALS) | frozenset(cls._classes) | _torch_storage_and_dtype_names()
        return cls._names

    @classmethod
    def register(cls, needed):
        """Register the globals this checkpoint names with torch, from ultralytics' `_SafeLoad` registry extended by
        sdgas' entries: RestoreOnly stand-ins for every class (ultralytics' own entries for them included) and
        sdgas' checked data callables. Only named globals are registered: torch rescans its list on every opcode."""
        from ultralytics.nn.tasks import _SafeLoad

        cls.names()
        with _SafeLoad._lock:
            if not getattr(_SafeLoad, "_sdgas_registered", False):
                _SafeLoad._registry = {**(_SafeLoad._registry or _SafeLoad._build()),
                                       **{name: RestoreOnly(c) for name, c in cls._classes.items()},
                                       "builtins.getattr": module_method, "numpy.core.multiarray.scalar": numpy_scalar,
                                       "numpy._core.multiarray.scalar": numpy_scalar}
                _SafeLoad._sdgas_registered = True
            entries = [(_SafeLoad._registry[n], n) for n in needed if n in _SafeLoad._registry]
            if "numpy.dtype" in needed:  # numpy's dtype classes are built at run time, as ultralytics notes
                import numpy as np

                entries.append(type(np.dtype(np.float64)))
            torch.serialization.add_safe_globals(entries)


def _torch_storage_and_dtype_names() -> frozenset:
    """torch's legacy storage classes (torch.FloatStorage, ...) and dtypes (torch.float32, ...) as pickles name them."""
    from torch._weights_only_unpickler import _get_allowed_globals

    return frozenset(n for n, obj in _get_allowed_globals().items()
                     if isinstance(obj, (torch.dtype, torch.serialization.StorageType)))  # not callable with a size


# ---------------------------------------------------------------------------------------------------------------------
# Static checks of the archive and its pickle (nothing is executed)

# the opcodes torch's weights-only unpickler implements, with the size of their fixed-length argument
_FIXED_ARG = {op[0]: size for op, size in (
    (pickle.NEWOBJ, 0), (pickle.REDUCE, 0), (pickle.BUILD, 0), (pickle.APPEND, 0), (pickle.APPENDS, 0),
    (pickle.SETITEM, 0), (pickle.SETITEMS, 0), (pickle.MARK, 0), (pickle.TUPLE, 0), (pickle.TUPLE1, 0),
    (pickle.TUPLE2, 0), (pickle.TUPLE3, 0), (pickle.NONE, 0), (pickle.NEWFALSE, 0), (pickle.NEWTRUE, 0),
    (pickle.EMPTY_TUPLE, 0), (pickle.EMPTY_LIST, 0), (pickle.EMPTY_DICT, 0), (pickle.EMPTY_SET, 0),
    (pickle.BINPERSID, 0), (pickle.BININT, 4), (pickle.BININT1, 1), (pickle.BININT2, 2), (pickle.BINFLOAT, 8),
    (pickle.BINGET, 1), (pickle.LONG_BINGET, 4), (pickle.BINPUT, 1), (pickle.LONG_BINPUT, 4), (pickle.PROTO, 1))}


def _global_name(module: str, name: str) -> str:
    """A GLOBAL's 'module.name' as torch resolves it (protocol-2 names such as __builtin__ mapped)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def scan_pickle(data: bytes, file) -> set:
    """The globals a pickle names; refuses what torch's weights-only unpickler would let through but must not.

    Walks the opcodes the way torch's own global scan does (`get_globals_in_pkl`), reading arguments only: nothing is
    built or called. Any opcode torch's unpickler does not implement ends the walk; torch then refuses the file.
    """
    names, i, end = set(), 0, len(data)
    while i < end:
        op, i = data[i], i + 1
        if op in _FIXED_ARG:
            i += _FIXED_ARG[op]
        elif op == pickle.GLOBAL[0]:
            module_end = data.index(b"\n", i)
            name_end = data.index(b"\n", module_end + 1)
            names.add(_global_name(data[i:module_end].decode(), data[module_end + 1:name_end].decode()))
            i = name_end + 1
        elif op in (pickle.BINUNICODE[0], pickle.SHORT_BINSTRING[0]):
            wide = op == pickle.BINUNICODE[0]  # a 4-byte length, else a 1-byte one
            size, i = (int.from_bytes(data[i:i + 4], "little"), i + 4) if wide else (data[i], i + 1)
            if DUNDER.match(data[i:i + size]):
                refuse(file, f"its pickle names the attribute '{data[i:i + size].decode()}', which lets an instance "
                             f"replace a method the unpickler calls")
            i += size
        elif op == pickle.LONG1[0]:
            bits = abs(pickle.decode_long(data[i + 1:i + 1 + data[i]])).bit_length()
            if bits > MAX_INT_BITS:
                refuse(file, f"its pickle holds a {bits}-bit integer, which no checkpoint needs and which can make "
                             f"dict keys collide (quadratic load time)")
            i += 1 + data[i]
        else:
            break
    return names


def _is_torchscript(records) -> bool:
    return any(r == "constants.pkl" or r.startswith("code/") for r in records)


def read_archive(file) -> bytes:
    """The pickle of a torch zip checkpoint, read with torch's own archive reader; refuses TorchScript and any entry
    that would expand beyond the file (torch.save stores entries uncompressed)."""
    try:
        reader = torch._C.PyTorchFileReader(str(file))
        records = reader.get_all_records()
    except RuntimeError as e:
        reason = " ".join(str(e).split()).split(". ")[0][:120]
        raise CheckpointError(f"'{file}' is not a loadable PyTorch checkpoint: the file is truncated, corrupted or "
                              f"of another format ({reason})") from None
    if _is_torchscript(records):
        refuse(file, "it is a TorchScript archive, a program that runs when loaded; sdgas loads model checkpoints")
    size = Path(file).stat().st_size
    expanded = sum(reader.get_record_size(r) for r in records)
    if expanded > size:
        refuse(file, f"its zip entries expand to {expanded:,} bytes from a {size:,}-byte file (compressed entries, "
                     f"which torch.save never writes)")
    if "data.pkl" not in records:
        raise CheckpointError(f"'{file}' is a zip archive without a checkpoint pickle (data.pkl)")
    return reader.get_record("data.pkl")


# ---------------------------------------------------------------------------------------------------------------------
# Checks of what was loaded


HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks",
              "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")


def _check_modules(model: nn.Module, file):
    """Refuse instances that shadow a method with a callable, hooks that are not hooks, tensors past their storage,
    and model YAMLs that would build something else (one pass over the layers)."""
    from ultralytics.nn.distill_model import FeatureHook

    for name, m in model.named_modules():
        label, state = name or type(m).__name__, vars(m)
        for key, value in state.items():
            if callable(value) and callable(getattr(type(m), key, None)) and not _is_own_forward(m, key, value):
                refuse(file, f"its layer '{label}' replaces the method '{key}' with a {type(value).__name__}")
            if isinstance(value, torch.Tensor):
                _check_tensor_fits(value, f"{label}.{key}", file)
            elif type(value).__module__.startswith(CLASS_MODULES):  # a loss or assigner object the layer holds
                _check_no_shadowed_methods(value, f"{label}.{key}", file)
        for key in HOOK_DICTS:
            for hook in (state.get(key) or {}).values():
                own_method = isinstance(hook, types.MethodType) and isinstance(hook.__self__, nn.Module)
                if not (own_method or isinstance(hook, FeatureHook)):
                    refuse(file, f"its layer '{label}' carries a {type(hook).__name__} in {key}")
        for key, t in (*state["_parameters"].items(), *state["_buffers"].items()):
            if t is not None:
                _check_tensor_fits(t, f"{label}.{key}", file)
        check_model_yaml(state.get("yaml"), file)


def _check_no_shadowed_methods(obj, label, file):
    """A plain object restored from the file may not carry a callable where its class has a method."""
    for key, value in vars(obj).items():
        if callable(value) and callable(getattr(type(obj), key, None)) and not isinstance(value, nn.Module):
            refuse(file, f"its object '{label}' replaces the method '{key}' with a {type(value).__name__}")


def _check_tensor_fits(t, key, file):
    """A tensor may view part of its storage, never more (a zero stride would turn a few bytes into gigabytes)."""
    storage = t.untyped_storage().nbytes()
    if t.numel() and t.numel() * t.element_size() > storage:
        refuse(file, f"its tensor '{key}' claims {t.numel():,} elements over a storage of {storage:,} bytes")


def _check_nesting(ckpt, file):
    """Containers inside containers at most MAX_NESTING deep (Python code that walks data recurses), iteratively."""
    from types import SimpleNamespace

    stack, seen = [(ckpt, 0)], set()
    while stack:
        x, depth = stack.pop()
        if depth > MAX_NESTING:
            refuse(file, f"its data nests more than {MAX_NESTING} levels deep")
        if id(x) in seen or not isinstance(x, (dict, list, tuple, set, frozenset, SimpleNamespace)):
            continue
        seen.add(id(x))
        items = x.values() if isinstance(x, dict) else vars(x).values() if isinstance(x, SimpleNamespace) else x
        stack.extend((v, depth + 1) for v in items)


def _is_own_forward(m, key, value) -> bool:
    return key.startswith("forward") and isinstance(value, types.MethodType) and value.__self__ is m


def checkpoint_model(ckpt):
    """The nn.Module a checkpoint dict carries (EMA preferred, as ultralytics does), or None."""
    if not isinstance(ckpt, dict):
        return None
    model = ckpt.get("ema") or ckpt.get("model")
    return model if isinstance(model, nn.Module) else None


def _torch_load(file, needed):
    """torch's weights-only load, with the allow-list registered and the thread marked as ultralytics'
    `_SafeLoad.loading` does (so any model build during the load takes ultralytics' no-eval path); the globals come
    from our own scan instead of a second one."""
    from ultralytics.nn.tasks import _SafeLoad

    AllowList.register(needed)
    _SafeLoad._local.active = True
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    finally:
        _SafeLoad._local.active = False


def load_checkpoint_dict(file) -> dict:
    """Load an sdgas/ultralytics detection checkpoint without running anything it carries (see the module doc)."""
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint '{file}' not found")
    if file.stat().st_size == 0:
        raise CheckpointError(f"'{file}' is empty (0 bytes), not a checkpoint")
    names = scan_pickle(read_archive(file), file)
    unknown = sorted(names - AllowList.names())
    if unknown:
        refuse(file, f"it names '{unknown[0]}'" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
               + ", which no sdgas or ultralytics detection checkpoint holds")
    try:
        ckpt = _torch_load(file, names)
    except pickle.UnpicklingError as e:
        refuse(file, f"its pickle asks for {_unpickler_reason(e)}")
    except RecursionError:
        refuse(file, "its data nests too deeply to load")
    except Exception as e:  # noqa: BLE001 - any other failure means the bytes are not a readable checkpoint
        reason = " ".join(str(e).split()).split(". ")[0][:160] or type(e).__name__
        raise CheckpointError(f"'{file}' is not a loadable PyTorch checkpoint: the file is truncated, corrupted or "
                              f"of another format ({type(e).__name__}: {reason})") from None
    return _check_loaded(ckpt, file)


def _unpickler_reason(e) -> str:
    """The sentence of torch's weights-only refusal that says what was refused (torch adds a page of advice)."""
    text = str(e)
    detail = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0] if text else type(e).__name__
    return " ".join(detail.split())[:200]


def _check_loaded(ckpt, file) -> dict:
    """Bounded nesting, a model inside, no quantization recipe to re-apply, sane modules and a checked model YAML."""
    _check_nesting({k: v for k, v in ckpt.items() if not isinstance(v, nn.Module)} if isinstance(ckpt, dict) else ckpt,
                   file)
    model = checkpoint_model(ckpt)
    if model is None:
        if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            held = "a bare state_dict (weights without the model that uses them)"
        else:
            held = f"a {type(ckpt).__name__} without a model under 'model' or 'ema'"
        raise CheckpointError(f"'{file}' is not an sdgas/ultralytics checkpoint: it holds {held}")
    if ckpt.get("modelopt"):
        raise CheckpointError(f"'{file}' is a quantization-aware (modelopt) checkpoint, which sdgas does not load")
    try:
        for m in (ckpt.get("model"), ckpt.get("ema")):
            if isinstance(m, nn.Module):
                _check_modules(m, file)
    except RecursionError:
        refuse(file, "its model nests too deeply to use")
    return ckpt


# ---------------------------------------------------------------------------------------------------------------------
# Model YAML checks (the YAML travels inside the checkpoint and is rebuilt by train/fine-tune/resume)

YAML_BOUNDS = {"nc": 1000, "depth_multiple": 2.0, "width_multiple": 2.0, "max_channels": 2048, "layers": 200,
               "repeats": 32, "int_arg": 4096}
PARAMETER_FREE_NN = {"Upsample", "Identity", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d",
                     "Dropout", "Flatten", "ReLU", "ReLU6", "SiLU", "GELU", "LeakyReLU", "Hardswish", "Sigmoid", "Tanh",
                     "Mish", "ZeroPad2d", "PixelShuffle", "PixelUnshuffle"}


def _check_activation(act, source):
    """`[torch.]nn.<Module>(literal args)` only, as ultralytics' own restricted loader accepts."""
    from ultralytics.nn.tasks import _SafeLoad

    try:
        _SafeLoad.activation(str(act))
    except Exception:  # noqa: BLE001 - any unparsable or non-literal spec is refused
        refuse(source, f"its model YAML sets the activation '{act}', which is not a torch.nn activation with literal "
                       f"arguments")


def _layer_allowed(m) -> bool:
    """A YAML layer name that resolves to a layer class: sdgas' modules, ultralytics' nn.modules, parameter-free
    torch.nn layers. Whole models (DetectionModel, which loads a YAML path) and other globals are not layers."""
    from ultralytics.nn import tasks as ultralytics_tasks

    if not isinstance(m, str):
        return False
    if m in SDGAS_MODULES:
        return True
    if m.startswith("nn."):
        return m[3:] in PARAMETER_FREE_NN
    obj = vars(ultralytics_tasks).get(m)
    return isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__.startswith("ultralytics.nn.modules")


def _literal(x) -> bool:
    if isinstance(x, (list, tuple)):
        return all(_literal(v) for v in x)
    return x is None or isinstance(x, (bool, int, float, str))


def _ints(x):
    if isinstance(x, (list, tuple)):
        for v in x:
            yield from _ints(v)
    elif isinstance(x, int) and not isinstance(x, bool):
        yield x


def _check_yaml_bounds(d, rows, source):
    """Sizes are checked before anything is built: a few bytes of YAML must not ask for gigabytes of weights."""
    multiples = ("depth_multiple", "width_multiple", "max_channels")
    values = [("nc", d.get("nc")), ("layers", len(rows)), *((k, d.get(k)) for k in multiples)]
    scales = d.get("scales")
    if scales is not None:  # every listed scale: any of them may be the one built
        if not (isinstance(scales, dict) and all(isinstance(v, (list, tuple)) and len(v) == 3 for v in scales.values())):
            refuse(source, f"its model YAML has malformed scales {scales!r}")
        values += [(k, v) for scale in scales.values() for k, v in zip(multiples, scale)]
    for key, value in values:
        if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= YAML_BOUNDS[key]):
            refuse(source, f"its model YAML sets {key}={value!r} (at most {YAML_BOUNDS[key]})")
    for row in rows:
        if not (isinstance(row[1], int) and 1 <= row[1] <= YAML_BOUNDS["repeats"]):
            refuse(source, f"its model YAML repeats the layer {row!r} {row[1]!r} times (at most "
                           f"{YAML_BOUNDS['repeats']})")
        if any(abs(v) > YAML_BOUNDS["int_arg"] for v in _ints(row[3])):
            refuse(source, f"its model YAML gives the layer {row!r} a size above {YAML_BOUNDS['int_arg']}")


def check_model_yaml(d, source):
    """Refuse a model YAML whose rebuild would run code or ask for unbounded memory: non-literal activations, names
    that are not layer classes, sizes past YAML_BOUNDS."""
    if not isinstance(d, dict):
        return
    if d.get("activation"):
        _check_activation(d["activation"], source)
    rows = []
    for key in ("backbone", "head"):
        part = d.get(key) or []
        rows.extend(part if isinstance(part, list) else [part])  # a non-list part is refused as a malformed row
    for row in rows:
        ok = isinstance(row, (list, tuple)) and len(row) == 4 and _layer_allowed(row[2]) and _literal(row[3])
        for arg in row[3] if ok else ():
            if isinstance(arg, str) and arg.startswith(("nn.", "torch.")):
                _check_activation(arg, source)
        if not ok:
            refuse(source, f"its model YAML has the layer {row!r}, which is not a known layer class with literal "
                           f"arguments")
    _check_yaml_bounds(d, rows, source)


# ---------------------------------------------------------------------------------------------------------------------
# Settings carried in a checkpoint are data, never trusted as paths or URLs

URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def checkpoint_path_setting(value, key: str, file):
    """A path a checkpoint names (its dataset, its teacher): a local, existing file or shipped weights by bare name,
    never a URL; else one line."""
    if packaged_weights(value):
        return str(value)
    if URL.match(str(value)):
        raise CheckpointError(f"'{file}' names its {key} by URL ('{value}'); sdgas never downloads: pass {key}= "
                              f"a local file")
    if not Path(str(value)).is_file():
        raise CheckpointError(f"the {key} '{value}' named inside '{file}' does not exist here; pass {key}= "
                              f"a local file")
    return str(value)


# ---------------------------------------------------------------------------------------------------------------------
# Hooking ultralytics' loaders


def torch_safe_load(weight, safe_only=None):
    """Drop-in for `ultralytics.nn.tasks.torch_safe_load` (which `load_checkpoint` calls): (ckpt, file).

    Trusted files go to ultralytics' own loader; everything else through `load_checkpoint_dict`. A name that is not a
    local file is never looked up online.
    """
    if is_trusted(weight):
        return _ULTRALYTICS_TORCH_SAFE_LOAD(weight, safe_only=safe_only)
    if not Path(weight).is_file():
        raise FileNotFoundError(f"checkpoint '{weight}' not found (sdgas never downloads weights by name)")
    return load_checkpoint_dict(weight), weight


torch_safe_load._sdgas_safe = True


def refuse_untrusted_torchscript(file):
    """TorchScript files are programs: loaded only when the user trusts them."""
    if not is_trusted(file):
        refuse(file, "it is a TorchScript program, which runs code when loaded")


def _gated_torchscript_backend():
    """ultralytics' TorchScript backend, refusing files the user has not trusted."""
    from ultralytics.nn.backends.pytorch import TorchScriptBackend

    class TrustedTorchScriptBackend(TorchScriptBackend):
        def load_model(self, weight):
            refuse_untrusted_torchscript(weight)
            super().load_model(weight)

    return TrustedTorchScriptBackend


def install_safe_loading():
    """Route ultralytics' checkpoint loading in this process through sdgas' checks (idempotent; done at import).

    Every ultralytics path that reads a model from a .pt (Model._load/load/train, the trainer's check_resume and
    setup_model, pretrained=, DistillationModel's teacher, AutoBackend) goes through `load_checkpoint`, which looks up
    `torch_safe_load` in ultralytics.nn.tasks at call time; replacing that one name covers them all. AutoBackend's
    TorchScript backend is replaced by one that refuses untrusted files. Nothing is written outside the process.
    """
    global _ULTRALYTICS_TORCH_SAFE_LOAD
    from ultralytics.nn import tasks
    from ultralytics.nn.autobackend import AutoBackend

    if getattr(tasks.torch_safe_load, "_sdgas_safe", False):
        return
    _ULTRALYTICS_TORCH_SAFE_LOAD = tasks.torch_safe_load
    tasks.torch_safe_load = torch_safe_load
    AutoBackend._BACKEND_MAP = {**AutoBackend._BACKEND_MAP, "torchscript": _gated_torchscript_backend()}


def check_detection_model(model, file):
    """One-line error unless `model` (or a distillation wrapper's student) ends in a detection head."""
    from ultralytics.nn.modules.head import OBB, Detect, Pose, Segment

    layers = getattr(getattr(model, "student_model", model), "model", None)
    head = layers[-1] if isinstance(layers, nn.Sequential) and len(layers) else None
    if not isinstance(head, Detect) or isinstance(head, (Segment, Pose, OBB)):
        raise CheckpointError(f"'{file}' holds a {type(model).__name__} whose output layer is "
                              f"{type(head).__name__ if head is not None else 'unknown'}, not a detection head; sdgas "
                              f"loads detection checkpoints only")
