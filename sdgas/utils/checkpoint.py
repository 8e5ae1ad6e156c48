"""Checkpoints that are safe to load and writes that survive being killed.

ultralytics loads `.pt` files by unpickling them, which runs whatever code the file carries. sdgas routes every such
load (`SDGAS("x.pt")`, the `sdgas` CLI, resume, pretrained weights, a distillation teacher, the validator's
AutoBackend and the end-of-training `strip_optimizer`) through `load_checkpoint_dict`: a restricted unpickler that

- resolves only the globals a genuine sdgas or ultralytics detection checkpoint holds: nn.Module classes from
  `torch.nn.modules`, `ultralytics.nn` and `sdgas`, classes defined in `sdgas` and in ultralytics' distillation, loss
  and assigner modules, torch's tensor rebuild functions and a few plain data types;
- lets those classes be created only the way pickle creates a plain object (`__new__` then state), never by calling
  them with arguments from the file, and calls only the data-rebuilding functions;
- checks the model YAML inside the checkpoint, because training and fine-tuning rebuild the model from it and
  ultralytics' builder evaluates activation strings and looks layer names up in its own globals.

Anything else is refused with one line naming the offending global, the file, and the opt-out: `SDGAS(x, trust=True)`,
the CLI key `trust=True`, or the environment variable SDGAS_TRUST_CHECKPOINTS=1 (those use ultralytics' own loader).

Checkpoint writes are staged in a folder beside the weights, flushed to disk and renamed into place, so a kill or a
full disk during a save leaves the previous last.pt/best.pt intact; `truncate_results_csv` drops the rows of epochs a
resumed checkpoint never saved.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import os
import pickle
import shutil
import types
import zipfile
from pathlib import Path

import torch
import torch.nn as nn
from ultralytics.utils import LOGGER

TRUST_ENV = "SDGAS_TRUST_CHECKPOINTS"
STAGING_DIR = ".saving"  # inside the weights folder: same filesystem, so the final rename is atomic

# nn.Module subclasses are admitted from these namespaces; pickled module classes name their defining module
MODULE_NAMESPACES = ("torch.nn.modules", "ultralytics.nn", "sdgas")
# plain (non-Module) classes admitted when defined in these modules, or anywhere in sdgas
CLASS_MODULES = ("ultralytics.nn.distill_model", "ultralytics.utils.loss", "ultralytics.utils.tal")

_TRUSTED_FILES: set[str] = set()
_ULTRALYTICS_TORCH_SAFE_LOAD = None  # ultralytics' own loader, used for trusted files; set by install_safe_loading()


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unsafe, damaged, or not an sdgas/ultralytics detection checkpoint."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose pickle references or calls something no genuine checkpoint contains."""


class AllEpochsSaved(Exception):  # noqa: N818 - a control-flow signal, not an error
    """A resumed run's checkpoint already holds its final epoch: only the final evaluation is left to do."""


class _Refused(pickle.UnpicklingError):
    """Raised inside the unpickler; turned into an UnsafeCheckpointError (or, for a class this installation lacks, a
    CheckpointError) naming the file."""

    def __init__(self, what: str, missing: bool = False):
        super().__init__(what)
        self.what, self.missing = what, missing


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
    """The sentence every refusal ends with: how a user who trusts the file loads it anyway."""
    return (f"If you trust this file, load it with SDGAS('{file}', trust=True), the CLI key trust=True, "
            f"or {TRUST_ENV}=1.")


# ---------------------------------------------------------------------------------------------------------------------
# The allow-list


def _numpy_globals() -> dict:
    """numpy scalars and dtypes (a best_fitness or metric stored as np.float64); object scalars are refused."""
    import numpy as np

    reconstruct = np.float64(0).__reduce__()[0]

    def numpy_scalar(dtype, *args):
        """numpy's scalar reconstructor for plain numeric dtypes only (an object dtype holds arbitrary objects)."""
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise _Refused(f"a numpy object scalar ({dtype})")
        return reconstruct(dtype, *args)

    return {"numpy.core.multiarray.scalar": numpy_scalar, "numpy._core.multiarray.scalar": numpy_scalar,
            "numpy.dtype": np.dtype}


def module_method(obj, name):
    """`getattr` as fused models need it (ultralytics' fuse() sets `m.forward = m.forward_fuse`, sdgas' CSA.fuse
    `m.forward = m.forward_taps`): only a layer's own `forward*` methods, looked up on its class."""
    method = getattr(type(obj), name, None) if isinstance(obj, nn.Module) and str(name).startswith("forward") else None
    if not isinstance(method, types.FunctionType):
        raise _Refused(f"getattr({_describe(type(obj))}, {name!r})")
    return method.__get__(obj)


def _data_globals() -> tuple[dict, dict]:
    """(name -> object admitted by name, name -> object that may also be *called* while unpickling).

    The callables only rebuild data (tensors, sizes, dicts, sets, paths, numpy scalars, the args namespace); none of
    them builds a model, loads a file or evaluates anything.
    """
    from ultralytics.utils import IterableSimpleNamespace

    path_cls = type(Path())
    callables = {
        "torch._utils._rebuild_tensor": torch._utils._rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
        "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": torch._utils._rebuild_parameter_with_state,
        "torch.Size": torch.Size,
        "torch.device": torch.device,
        "collections.OrderedDict": __import__("collections").OrderedDict,
        "builtins.set": set,
        "builtins.frozenset": frozenset,
        "builtins.bytearray": bytearray,
        "_codecs.encode": __import__("_codecs").encode,  # how protocol 2 stores bytes
        "builtins.getattr": module_method,
        "ultralytics.utils.IterableSimpleNamespace": IterableSimpleNamespace,
        "ultralytics.yolo.utils.IterableSimpleNamespace": IterableSimpleNamespace,  # pre-8.0.44 checkpoints
        **{f"{m}.{c}": path_cls for m in ("pathlib", "pathlib._local") for c in ("PosixPath", "WindowsPath")},
        **_numpy_globals(),
    }
    named = {f"torch.{name}": obj for name, obj in vars(torch).items() if isinstance(obj, torch.dtype)}
    named.update({
        "torch.nn.parameter.Parameter": nn.Parameter,
        "torch.storage.UntypedStorage": torch.storage.UntypedStorage,
        "torch.storage.TypedStorage": torch.storage.TypedStorage,
        "ultralytics.nn.modules.block.Silence": nn.Identity,  # YOLOv9e
        "ultralytics.nn.tasks.YOLOv10DetectionModel": importlib.import_module("ultralytics.nn.tasks").DetectionModel,
    })
    named.update(callables)
    return named, callables


_NAMED = _CALLABLE = _CALLABLE_IDS = None


def _allow_lists() -> tuple[dict, dict]:
    """The data allow-lists, built once per process."""
    global _NAMED, _CALLABLE
    if _NAMED is None:
        _NAMED, _CALLABLE = _data_globals()
    return _NAMED, _CALLABLE


def _callable_ids() -> frozenset:
    """ids of the admitted callables (the objects stay alive in the allow-list, so the ids stay theirs)."""
    global _CALLABLE_IDS
    if _CALLABLE_IDS is None:
        _CALLABLE_IDS = frozenset(id(f) for f in _allow_lists()[1].values())
    return _CALLABLE_IDS


def _in_namespace(module: str, namespaces) -> bool:
    return any(module == ns or module.startswith(f"{ns}.") for ns in namespaces)


def resolve_allowed_global(module: str, name: str):
    """The object a genuine checkpoint means by `module.name`, or _Refused.

    Only modules inside the admitted namespaces are ever imported, so naming a global cannot import (and run the top
    level of) an arbitrary module.
    """
    named, _ = _allow_lists()
    key = f"{module}.{name}"
    if key in named:
        return named[key]
    admitted_module = _in_namespace(module, MODULE_NAMESPACES + CLASS_MODULES)
    if not (admitted_module and name.isidentifier() and "__" not in module):
        raise _Refused(f"the global '{key}'")
    try:
        obj = getattr(importlib.import_module(module), name, None)
    except ImportError:
        obj = None
    if obj is None:
        raise _Refused(f"'{key}'", missing=True)
    if isinstance(obj, type) and obj.__module__ == module and (
            issubclass(obj, nn.Module) or module in CLASS_MODULES or _in_namespace(module, ("sdgas",))):
        return obj
    raise _Refused(f"the global '{key}'")


class RestrictedUnpickler(pickle._Unpickler):
    """pickle's Python unpickler, restricted to what genuine checkpoints do.

    - `find_class` admits only `resolve_allowed_global` objects;
    - REDUCE (call with arguments) only the data-rebuilding callables;
    - NEWOBJ (`cls.__new__(cls, *args)`, no `__init__`) only admitted classes;
    - BUILD only sets state on instances, never on classes, functions or modules;
    - the protocol 0/1 INST and OBJ opcodes, which call a class with arguments, are refused.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        self.granted = {}  # id -> object handed out by find_class in this load

    def find_class(self, module, name):
        if self.proto < 3 and self.fix_imports:  # protocol 2 names builtins '__builtin__', as pickle does
            import _compat_pickle

            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        obj = resolve_allowed_global(module, name)
        self.granted[id(obj)] = obj
        return obj

    def load_reduce(self):
        func = self.stack[-2]
        if id(func) not in _callable_ids():
            raise _Refused(f"a call of {_describe(func)} with arguments")
        pickle._Unpickler.load_reduce(self)

    def load_newobj(self):
        self._check_new(self.stack[-2])
        pickle._Unpickler.load_newobj(self)

    def load_newobj_ex(self):
        self._check_new(self.stack[-3])
        pickle._Unpickler.load_newobj_ex(self)

    def _check_new(self, cls):
        if not (isinstance(cls, type) and self.granted.get(id(cls)) is cls):
            raise _Refused(f"the creation of {_describe(cls)}")

    def load_build(self):
        inst = self.stack[-2]
        if isinstance(inst, (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType)):
            raise _Refused(f"setting attributes on {_describe(inst)}")
        pickle._Unpickler.load_build(self)

    def load_legacy_instantiate(self):
        raise _Refused("the INST/OBJ opcode (calls a class with arguments)")

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.INST[0]] = load_legacy_instantiate
    dispatch[pickle.OBJ[0]] = load_legacy_instantiate


def _describe(obj) -> str:
    """'module.Name' for a class or function, else the object's type."""
    name = getattr(obj, "__qualname__", None)
    if isinstance(name, str) and isinstance(getattr(obj, "__module__", None), str):
        return f"'{obj.__module__}.{name}'"
    return f"a {type(obj).__name__} object"


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


# torch.load(pickle_module=...) needs a module-like object with Unpickler and load
RESTRICTED_PICKLE = types.ModuleType("sdgas_restricted_pickle")
RESTRICTED_PICKLE.Unpickler = RestrictedUnpickler
RESTRICTED_PICKLE.load = _restricted_load
RESTRICTED_PICKLE.UnpicklingError = pickle.UnpicklingError


# ---------------------------------------------------------------------------------------------------------------------
# Model YAML checks (the YAML travels inside the checkpoint and is rebuilt by train/fine-tune/resume)


def _check_activation(act, source):
    """`[torch.]nn.<Module>(literal args)` only, as ultralytics' own restricted loader accepts."""
    try:
        call = ast.parse(str(act).strip(), mode="eval").body
        assert isinstance(call, ast.Call)
        parts, node = [], call.func
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        assert isinstance(node, ast.Name) and [*parts[1:], node.id] in (["nn"], ["nn", "torch"])
        klass = getattr(nn, parts[0])
        assert isinstance(klass, type) and issubclass(klass, nn.Module)
        [ast.literal_eval(a) for a in call.args] + [ast.literal_eval(k.value) for k in call.keywords]
    except Exception:  # noqa: BLE001 - any unparsable or non-literal spec is refused
        raise UnsafeCheckpointError(f"refusing to load '{source}': its model YAML sets activation '{act}', which "
                                    f"is not a torch.nn activation with literal arguments. {opt_out_hint(source)}") \
            from None


def _layer_allowed(m) -> bool:
    """A YAML layer name the builders resolve to an nn.Module class (never another global of ultralytics' builder)."""
    from ultralytics.nn import tasks as ultralytics_tasks

    from sdgas.nn.tasks import SDGAS_MODULES

    if not isinstance(m, str):
        return False
    if m in SDGAS_MODULES:
        return True
    obj = getattr(nn, m[3:], None) if m.startswith("nn.") else vars(ultralytics_tasks).get(m)
    return isinstance(obj, type) and issubclass(obj, nn.Module)


def _literal(x) -> bool:
    if isinstance(x, (list, tuple)):
        return all(_literal(v) for v in x)
    return x is None or isinstance(x, (bool, int, float, str))


def check_model_yaml(d, source):
    """Refuse a model YAML whose rebuild would run code: non-literal activations, layers that are not nn.Modules."""
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
            raise UnsafeCheckpointError(f"refusing to load '{source}': its model YAML has the layer {row!r}, which is "
                                        f"not a known model layer with literal arguments. {opt_out_hint(source)}")


# ---------------------------------------------------------------------------------------------------------------------
# Loading


def _is_torchscript(file) -> bool:
    with contextlib.suppress(zipfile.BadZipFile, OSError):
        with zipfile.ZipFile(file) as z:
            return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in z.namelist())
    return False


def restricted_torch_load(file):
    """torch.load through the restricted unpickler; one-line CheckpointErrors for refused, damaged or foreign files."""
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint '{file}' not found")
    if file.stat().st_size == 0:
        raise CheckpointError(f"'{file}' is empty (0 bytes), not a checkpoint")
    if _is_torchscript(file):
        raise CheckpointError(f"'{file}' is a TorchScript archive, not a PyTorch checkpoint; export it as "
                              f"format=torchscript and load that file by its .torchscript name instead")
    try:
        return torch.load(file, map_location="cpu", pickle_module=RESTRICTED_PICKLE, weights_only=False)
    except _Refused as e:
        if e.missing:
            raise CheckpointError(f"'{file}' needs {e.what}, which this installation of sdgas/ultralytics does not "
                                  f"have (saved by another version?)") from None
        raise UnsafeCheckpointError(f"refusing to load '{file}': it contains {e.what}, which no sdgas or ultralytics "
                                    f"detection checkpoint holds, and unpickling it could run code. "
                                    f"{opt_out_hint(file)}") from None
    except Exception as e:  # noqa: BLE001 - any other failure means the bytes are not a readable checkpoint
        reason = " ".join(str(e).split()).split(". ")[0][:160] or type(e).__name__
        raise CheckpointError(f"'{file}' is not a loadable PyTorch checkpoint: the file is truncated, corrupted or "
                              f"of another format ({type(e).__name__}: {reason})") from None


def checkpoint_model(ckpt):
    """The nn.Module a checkpoint dict carries (EMA preferred, as ultralytics does), or None."""
    if not isinstance(ckpt, dict):
        return None
    model = ckpt.get("ema") or ckpt.get("model")
    return model if isinstance(model, nn.Module) else None


def load_checkpoint_dict(file) -> dict:
    """Load an sdgas/ultralytics checkpoint dict safely: allow-listed unpickling, a model inside, a checked YAML."""
    ckpt = restricted_torch_load(file)
    model = checkpoint_model(ckpt)
    if model is None:
        if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            held = "a bare state_dict (weights without the model that uses them)"
        else:
            held = f"a {type(ckpt).__name__} without a model under 'model' or 'ema'"
        raise CheckpointError(f"'{file}' is not an sdgas/ultralytics checkpoint: it holds {held}")
    for m in model.modules():
        check_model_yaml(getattr(m, "yaml", None), file)
    return ckpt


def torch_safe_load(weight, safe_only=None):
    """Drop-in for `ultralytics.nn.tasks.torch_safe_load` (which `load_checkpoint` calls): (ckpt, file).

    Trusted files go to ultralytics' own loader; everything else through `load_checkpoint_dict`.
    """
    if is_trusted(weight):
        return _ULTRALYTICS_TORCH_SAFE_LOAD(weight, safe_only=safe_only)
    file = weight
    if not Path(weight).is_file():  # a bare official name: let ultralytics resolve (download) it, then load safely
        from ultralytics.utils.downloads import attempt_download_asset

        file = attempt_download_asset(weight)
    return load_checkpoint_dict(file), file


torch_safe_load._sdgas_safe = True


def install_safe_loading():
    """Route ultralytics' checkpoint unpickling through sdgas' allow-list (idempotent; done at `import sdgas`).

    Every ultralytics path that reads a model from a .pt (Model._load/load/train, the trainer's check_resume and
    setup_model, pretrained=, DistillationModel's teacher, AutoBackend) goes through `load_checkpoint`, which looks up
    `torch_safe_load` in ultralytics.nn.tasks at call time; replacing that one name covers them all.
    """
    global _ULTRALYTICS_TORCH_SAFE_LOAD
    from ultralytics.nn import tasks

    if getattr(tasks.torch_safe_load, "_sdgas_safe", False):
        return
    _ULTRALYTICS_TORCH_SAFE_LOAD = tasks.torch_safe_load
    tasks.torch_safe_load = torch_safe_load


# ---------------------------------------------------------------------------------------------------------------------
# Atomic writes


def fsync_path(path):
    """Flush a file's (or, on POSIX, a directory's) data to disk."""
    if Path(path).is_dir() and os.name == "nt":
        return  # directories cannot be opened for fsync on Windows
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_file(src, dst):
    """Flush `src`, rename it over `dst` (atomic on one filesystem) and flush the folder entry."""
    fsync_path(src)
    os.replace(src, dst)
    fsync_path(Path(dst).parent)


def atomic_write_bytes(path, data: bytes):
    """Write `data` to a temporary file beside `path`, flush it and rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_checkpoint_writes(trainer):
    """Point the trainer's last/best/weights paths into a staging folder, then commit what was written there.

    Files are renamed into the weights folder one by one with last.pt renamed last, so at any instant best.pt is at
    least as new as last.pt and both are complete files. On failure (e.g. a full disk) the staged files are removed,
    the previous checkpoints stay as they were, and the error is re-raised.
    """
    wdir, last, best = trainer.wdir, trainer.last, trainer.best
    staging = wdir / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)  # leftovers of a save that was killed
    staging.mkdir(parents=True)
    trainer.wdir, trainer.last, trainer.best = staging, staging / last.name, staging / best.name
    try:
        yield staging
        trainer.wdir, trainer.last, trainer.best = wdir, last, best
        for f in sorted(staging.iterdir(), key=lambda p: p.name == last.name):
            commit_file(f, wdir / f.name)
    except BaseException as e:
        if isinstance(e, OSError):
            LOGGER.error(f"checkpoint save failed ({e}); the previous {last.name} and {best.name} are intact")
        raise
    finally:
        trainer.wdir, trainer.last, trainer.best = wdir, last, best
        shutil.rmtree(staging, ignore_errors=True)


def strip_optimizer_atomic(f, s="", updates=None):
    """ultralytics' strip_optimizer, loading `f` through the allow-list and renaming the result into place."""
    from ultralytics.utils.torch_utils import strip_optimizer

    load_checkpoint_dict(f)  # refuses anything the unrestricted load inside strip_optimizer must not see
    target = Path(s or f)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        ckpt = strip_optimizer(f, s=str(tmp), updates=updates)
        if ckpt and tmp.exists():
            commit_file(tmp, target)
        return ckpt
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_final_strip(trainer):
    """Inside ultralytics' final_eval: strip_optimizer loads through the allow-list and writes atomically, and last.pt
    is stripped only once the final evaluation is done, so a kill before that leaves it resumable."""
    import ultralytics.engine.trainer as trainer_module
    from ultralytics.utils import RANK

    last, stock_strip = Path(trainer.last), trainer_module.strip_optimizer

    def strip(f, s="", updates=None):
        if Path(f) == last and not s:
            return load_checkpoint_dict(f)  # final_eval only reads train_results from it
        return strip_optimizer_atomic(f, s, updates)

    trainer_module.strip_optimizer = strip
    try:
        yield
    finally:
        trainer_module.strip_optimizer = stock_strip
    if RANK in {-1, 0} and last.exists():
        strip_optimizer_atomic(last)


def check_detection_model(model, file):
    """One-line error unless `model` (or a distillation wrapper's student) ends in a detection head."""
    from ultralytics.nn.modules.head import OBB, Detect, Pose, Segment

    layers = getattr(getattr(model, "student_model", model), "model", None)
    head = layers[-1] if isinstance(layers, nn.Sequential) and len(layers) else None
    if not isinstance(head, Detect) or isinstance(head, (Segment, Pose, OBB)):
        raise CheckpointError(f"'{file}' holds a {type(model).__name__} whose output layer is "
                              f"{type(head).__name__ if head is not None else 'unknown'}, not a detection head; sdgas "
                              f"loads detection checkpoints only")


def check_class_count(ckpt, data: dict, file):
    """One-line error when resuming a checkpoint on a dataset with another number of classes."""
    model = checkpoint_model(ckpt)
    nc = getattr(model, "nc", None) or (getattr(model, "yaml", None) or {}).get("nc")
    if nc is not None and data.get("nc") is not None and int(nc) != int(data["nc"]):
        raise CheckpointError(f"'{file}' was trained for {nc} classes but the dataset "
                              f"'{data.get('yaml_file', '?')}' has {data['nc']}: resume with the dataset it was "
                              f"trained on, or start a new training from it (model={file} without resume)")


# ---------------------------------------------------------------------------------------------------------------------
# results.csv


def truncate_results_csv(csv, epochs_saved: int) -> int:
    """Keep results.csv's header and one complete row for each epoch 1..epochs_saved; return the rows kept.

    After a kill, results.csv may hold a row for an epoch whose checkpoint was never saved (rows are appended before
    the save), a half-written last line, or, after several resumes, repeated epochs. The file is rewritten atomically.
    """
    csv = Path(csv)
    if not csv.is_file():
        return 0
    text = csv.read_text(encoding="utf-8")
    lines = text.split("\n")
    complete = lines[:-1]  # the last element is "" after a final newline, or a partial row without one
    if not complete:
        csv.unlink()
        return 0
    header, rows = complete[0], {}
    width = header.count(",")
    for line in complete[1:]:
        epoch = _row_epoch(line)
        if epoch is not None and 1 <= epoch <= epochs_saved and line.count(",") == width:
            rows[epoch] = line  # a repeated epoch keeps its latest row
    kept = [rows[e] for e in sorted(rows)]
    new = "\n".join([header, *kept]) + "\n"
    if new != text:
        atomic_write_bytes(csv, new.encode("utf-8"))
    return len(kept)


def _row_epoch(line: str):
    with contextlib.suppress(ValueError):
        value = float(line.split(",", 1)[0])
        if value.is_integer():
            return int(value)
    return None
