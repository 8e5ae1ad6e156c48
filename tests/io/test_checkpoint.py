"""Safe checkpoint loading, the weights-only export and atomic checkpoint writes.

A .pt whose pickle would run a command must be refused by every loading path without the command running (a marker
file it would create must not appear); so must every case of the raw-opcode attack corpus (tests/attack_corpus.py),
within bounded memory and time; genuine sdgas and stock YOLOv8n checkpoints, trained here, must load; the
`.safetensors` export must round-trip to identical outputs; damaged and foreign files get one-line errors.
"""

import json
import os
import pickle
import struct
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from sdgas import SDGAS
from sdgas.io.checkpoint import AllowList, CheckpointError, UnsafeCheckpointError, load_checkpoint_dict
from sdgas.io.saving import (atomic_final_strip, staged_checkpoint_writes, strip_optimizer_atomic,
                                truncate_results_csv)

TRAIN = dict(epochs=1, imgsz=64, batch=8, workers=0, device="cpu", plots=False, seed=0, exist_ok=True, amp=False)


def run_cli(*args, env=None):
    """Run `python -m sdgas.cli` in a subprocess."""
    return subprocess.run([sys.executable, "-m", "sdgas.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def sdgas_weights(neu_subset, tmp_path_factory):
    """weights/ of a genuine 1-epoch sdgas run: best.pt, last.pt (stripped) and epoch0.pt (with optimizer state)."""
    project = tmp_path_factory.mktemp("sdgas-run")
    SDGAS("sdgasnet.yaml").train(data=str(neu_subset), project=str(project), name="run", save_period=1, **TRAIN)
    return project / "run" / "weights"


@pytest.fixture(scope="module")
def yolov8n_weights(neu_subset, tmp_path_factory):
    """weights/ of a stock ultralytics YOLOv8n built from its YAML and trained 1 epoch here (never downloaded)."""
    from ultralytics import YOLO

    project = tmp_path_factory.mktemp("yolov8n-run")
    YOLO("yolov8n.yaml").train(data=str(neu_subset), project=str(project), name="run", **TRAIN)
    return project / "run" / "weights"


class RunsCommand:
    """Pickles as `os.system(command)`: unpickling it runs the command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class BuildsFromHostileYAML:
    """Pickles as a call of an admitted class with a YAML whose activation string runs a command when evaluated."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        from sdgas.nn.tasks import SDGASDetectionModel

        act = f"__import__('os').system({self.command!r})"
        return SDGASDetectionModel, ({"activation": act, "nc": 1, "backbone": [[-1, 1, "Conv", [16, 3, 2]]],
                                      "head": [[-1, 1, "Detect", ["nc"]]]},)


def write_payloads(genuine: str, folder, marker) -> dict:
    """Hostile checkpoints built on a genuine one; each would `touch marker` if loaded with plain pickle."""
    command = f"touch {marker}"
    ckpt = torch.load(genuine, map_location="cpu", weights_only=False)
    paths = {name: folder / f"{name}.pt" for name in ("system", "raw-pickle", "class-call", "yaml-activation",
                                                      "yaml-layer")}
    torch.save({**ckpt, "extra": RunsCommand(command)}, paths["system"])
    with open(paths["raw-pickle"], "wb") as f:  # not a torch zip: torch's legacy loader unpickles it directly
        pickle.dump({"model": RunsCommand(command)}, f, protocol=2)
    torch.save({**ckpt, "extra": BuildsFromHostileYAML(command)}, paths["class-call"])
    model = ckpt["model"]
    model.yaml = {**model.yaml, "activation": f"__import__('os').system({command!r})"}  # runs when rebuilt to train
    torch.save(ckpt, paths["yaml-activation"])
    model.yaml = {**model.yaml, "activation": None, "backbone": [[-1, 1, "torch_load", [str(paths["system"])]]]}
    torch.save(ckpt, paths["yaml-layer"])  # ultralytics' builder would call its own global torch_load on the file
    return paths


@pytest.fixture
def hostile(sdgas_weights, tmp_path):
    """(paths of hostile checkpoints, the marker file they would create)."""
    marker = tmp_path / "pwned"
    return write_payloads(str(sdgas_weights / "best.pt"), tmp_path, marker), marker


@pytest.mark.parametrize("payload", ["system", "raw-pickle", "class-call", "yaml-activation", "yaml-layer"])
@pytest.mark.slow  # trains a model
def test_hostile_checkpoint_refused_by_sdgas(hostile, payload):
    """SDGAS(path) refuses each payload with one line naming the file and the reason; the command never runs. A bare
    pickle (no torch archive) is not a checkpoint at all."""
    paths, marker = hostile
    with pytest.raises(CheckpointError) as e:
        SDGAS(paths[payload])
    message = str(e.value)
    assert "\n" not in message and str(paths[payload]) in message
    expected = {"system": "posix.system", "raw-pickle": "not a loadable PyTorch checkpoint",
                "class-call": "SDGASDetectionModel with arguments", "yaml-activation": "activation",
                "yaml-layer": "torch_load"}[payload]
    assert expected in message
    assert payload == "raw-pickle" or "trust=True" in message
    assert not marker.exists()


@pytest.mark.slow  # trains a model
def test_hostile_checkpoint_refused_by_every_python_path(hostile, neu_subset, sdgas_weights):
    """ultralytics' own entry points (YOLO, load_checkpoint, AutoBackend, Model.load, pretrained=, resume, a teacher,
    the trainer's strip_optimizer) all go through the allow-list once sdgas is imported."""
    from ultralytics import YOLO
    from ultralytics.nn.autobackend import AutoBackend
    from ultralytics.nn.distill_model import DistillationModel
    from ultralytics.nn.tasks import load_checkpoint

    from sdgas.models.detect import SDGASTrainer

    paths, marker = hostile
    evil = str(paths["system"])
    loaders = {
        "YOLO": lambda: YOLO(evil),
        "load_checkpoint": lambda: load_checkpoint(evil),
        "AutoBackend": lambda: AutoBackend(evil, device=torch.device("cpu")),
        "Model.load": lambda: SDGAS("sdgasnet.yaml").load(evil),
        "trainer resume=path": lambda: SDGASTrainer(overrides={"resume": evil, "data": str(neu_subset)}),
        "train(resume=path)": lambda: SDGAS("sdgasnet.yaml").train(resume=evil, data=str(neu_subset)),
        "distillation teacher": lambda: DistillationModel(evil, SDGAS(sdgas_weights / "best.pt").model),
        "strip_optimizer": lambda: strip_optimizer_atomic(evil),
    }
    for name, load in loaders.items():
        with pytest.raises(UnsafeCheckpointError, match="posix.system"):
            load()
        assert not marker.exists(), name


@pytest.mark.parametrize("mode", ["predict", "val", "export", "heatmap", "train", "distill"])
@pytest.mark.slow  # trains a model
def test_hostile_checkpoint_refused_by_cli(hostile, sdgas_weights, neu_subset, mode):
    """`sdgas predict|val|export|heatmap model=x.pt`, `sdgas train model=x.pt resume` and `sdgas train
    distill_model=x.pt`: exit 1, one line naming the offending global, the file and the opt-out; nothing runs."""
    paths, marker = hostile
    evil = paths["system"]
    args = {"predict": [f"model={evil}", "source=" + str(neu_subset.parent / "images" / "val")],
            "val": [f"model={evil}", f"data={neu_subset}"], "export": [f"model={evil}", "format=onnx"],
            "heatmap": [f"model={evil}"], "train": [f"model={evil}", "resume=True"],
            "distill": [f"model={sdgas_weights / 'best.pt'}", f"distill_model={evil}", f"data={neu_subset}",
                        "epochs=1", "workers=0", f"project={evil.parent}"]}[mode]
    result = run_cli("train" if mode == "distill" else mode, *args, "imgsz=64")
    assert result.returncode == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("sdgas: error:")]
    assert len(error) == 1 and "posix.system" in error[0] and str(evil) in error[0]
    assert "trust=True" in error[0] and "SDGAS_TRUST_CHECKPOINTS" in error[0]
    assert "Traceback" not in result.stderr
    assert not marker.exists()


CORPUS_PROBE = """
import json, resource, sys, time
import torch
from sdgas import SDGAS
from sdgas.cli import main
from ultralytics import YOLO

calls = []
torch.jit.load = lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(RuntimeError("torch.jit.load called"))
cases, extra = json.loads(sys.argv[1]), json.loads(sys.argv[2])
report = {}
for name, path in cases.items():
    loaders = {"SDGAS": lambda: SDGAS(path)}
    if path.endswith(".pt"):
        loaders["YOLO"] = lambda: YOLO(path)
        for mode in ("predict", "val", "export", "heatmap"):
            loaders[mode] = lambda mode=mode: main([mode, f"model={path}", *extra[mode]])
        loaders["train resume"] = lambda: main(["train", f"model={path}", "resume=True"])
        loaders["train distill_model"] = lambda: main(["train", f"distill_model={path}", *extra["train"]])
    for entry, load in loaders.items():
        start, peak = time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # CPU s, not wall
        try:
            load()
            outcome = "loaded"
        except Exception as e:
            outcome = f"{type(e).__name__}: {e}"
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1e6  # GB the peak rose by
        report[f"{name} / {entry}"] = (outcome, time.process_time() - start, grown)
print(json.dumps({"report": report, "jit_load_calls": len(calls),
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""


@pytest.fixture(scope="module")
def corpus(sdgas_weights, tmp_path_factory):
    """{case: (path, words of its refusal)} for every route of the attack corpus, and the marker they would touch."""
    from attack_corpus import write_corpus, write_safetensors_corpus

    folder = tmp_path_factory.mktemp("corpus")
    marker = folder / "pwned"
    cases = write_corpus(folder, sdgas_weights / "best.pt", marker)
    st = SDGAS(sdgas_weights / "best.pt").export(format="safetensors")
    cases.update(write_safetensors_corpus(folder, st, marker))
    return cases, marker


@pytest.mark.slow  # trains a model
def test_attack_corpus_refused_everywhere(corpus, neu_subset):
    """Every case of the raw-opcode/zip-byte corpus, through SDGAS(), YOLO() after `import sdgas` and every CLI mode
    that takes a checkpoint: refused with one line naming the file and the reason, nothing executed (no marker, no
    torch.jit.load), within 20 s of CPU time per load (CPU time: a busy machine once pushed a load past 20 s of wall
    clock), and no load raising the process's peak memory by 1.5 GB (the train modes
    build a trainer before they load the checkpoint, so the peak of the whole process is not the measure)."""
    cases, marker = corpus
    images = str(neu_subset.parent / "images" / "val")
    extra = {"predict": [f"source={images}", "imgsz=64"], "val": [f"data={neu_subset}", "imgsz=64"],
             "export": ["format=onnx", "imgsz=64"], "heatmap": [f"source={images}", "imgsz=64"],
             "train": [f"data={neu_subset}", "imgsz=64", "epochs=1", "workers=0", f"project={marker.parent}"]}
    probe = subprocess.run([sys.executable, "-c", CORPUS_PROBE, json.dumps({k: str(p) for k, (p, _) in cases.items()}),
                            json.dumps(extra)], capture_output=True, text=True, timeout=900)
    assert probe.returncode == 0, probe.stderr[-3000:]
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    assert len(result["report"]) >= 7 * len([p for p, _ in cases.values() if str(p).endswith(".pt")])
    for key, (outcome, seconds, grown_gb) in result["report"].items():
        path, words = cases[key.split(" / ")[0]]
        assert outcome.startswith(("CheckpointError", "UnsafeCheckpointError")), (key, outcome)
        assert "\n" not in outcome and str(path) in outcome and words in outcome, (key, outcome)
        assert seconds < 20 and grown_gb < 1.5, (key, seconds, grown_gb)  # a CPU or memory bomb would exceed them
    assert result["jit_load_calls"] == 0
    slowest = max(result["report"].items(), key=lambda kv: kv[1][1])
    largest = max(result["report"].items(), key=lambda kv: kv[1][2])
    print(f"{len(result['report'])} refused loads; slowest {slowest[1][1]:.2f} CPU s ({slowest[0]}); largest rise of the "
          f"peak {largest[1][2]:.2f} GB ({largest[0]}); peak RSS of the probe {result['peak_rss_gb']:.2f} GB")
    assert not marker.exists()


@pytest.mark.slow  # trains a model
def test_checkpoint_settings_are_data_not_paths(sdgas_weights, neu_subset, tmp_path):
    """A checkpoint naming its dataset or teacher by URL is refused at val and resume (never downloaded); a resumed
    run writes only into the run folder the checkpoint sits in, whatever save_dir it carries, and clears a .saving/
    folder left by a kill; a finished run says there is nothing to resume."""
    ckpt = torch.load(sdgas_weights / "epoch0.pt", map_location="cpu", weights_only=False)  # our own file
    weights = tmp_path / "run" / "weights"
    weights.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    for key, value in (("data", "https://example.invalid/evil.yaml"), ("distill_model", "https://example.invalid/t.pt")):
        torch.save({**ckpt, "train_args": {**ckpt["train_args"], key: value}}, weights / "last.pt")
        with pytest.raises(CheckpointError, match=f"names its {key} by URL") as e:
            SDGAS(weights / "last.pt").train(resume=True)
        assert "\n" not in str(e.value)
        if key == "data":
            with pytest.raises(CheckpointError, match="names its data by URL"):
                SDGAS(weights / "last.pt").val(imgsz=64)
    args = {**ckpt["train_args"], "data": str(neu_subset), "save_dir": str(elsewhere), "project": str(elsewhere)}
    torch.save({**ckpt, "train_args": args}, weights / "last.pt")
    (weights / ".saving").mkdir()
    SDGAS(weights / "last.pt").train(resume=True, workers=0)
    assert not elsewhere.exists() and not (weights / ".saving").exists()
    assert load_checkpoint_dict(weights / "last.pt")["epoch"] == -1  # the final strip wrote here
    with pytest.raises(CheckpointError, match="nothing to resume"):
        SDGAS(weights / "last.pt").train(resume=True)


@pytest.mark.slow  # trains a model
def test_opt_out_uses_the_unrestricted_loader(hostile, neu_subset, monkeypatch):
    """trust=True (CLI key) and SDGAS_TRUST_CHECKPOINTS=1 load the file with ultralytics' loader: the payload is
    live, which is what the refusals above prevent."""
    paths, marker = hostile
    result = run_cli("predict", f"model={paths['system']}", "trust=True", "imgsz=64",
                     "source=" + str(neu_subset.parent / "images" / "val"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert marker.exists()
    marker.unlink()
    monkeypatch.setenv("SDGAS_TRUST_CHECKPOINTS", "1")
    assert SDGAS(paths["system"]).task == "detect"
    assert marker.exists()


@pytest.mark.slow  # trains a model
def test_genuine_sdgas_checkpoints_load(sdgas_weights, neu_subset, tmp_path):
    """A model as built (Model.save), best.pt, last.pt and a mid-training epoch0.pt (optimizer state included) load,
    with exactly the tensors an unrestricted torch.load gives, and predict."""
    SDGAS("sdgasnet.yaml").save(tmp_path / "built.pt")
    for file in (tmp_path / "built.pt", *(sdgas_weights / name for name in ("best.pt", "last.pt", "epoch0.pt"))):
        safe = load_checkpoint_dict(file)
        plain = torch.load(file, map_location="cpu", weights_only=False)
        assert safe.keys() == plain.keys()
        for a, b in zip((safe.get("ema") or safe["model"]).state_dict().values(),
                        (plain.get("ema") or plain["model"]).state_dict().values()):
            assert torch.equal(a, b)
    assert load_checkpoint_dict(sdgas_weights / "epoch0.pt")["optimizer"] is not None
    model = SDGAS(sdgas_weights / "best.pt")
    assert type(model.model).__name__ == "SDGASDetectionModel" and len(model.model.names) == 6
    assert len(model.predict(str(neu_subset.parent / "images" / "val"), imgsz=64, verbose=False)) == 12


@pytest.mark.slow  # trains a model
def test_stock_yolov8n_checkpoint_loads(yolov8n_weights, neu_subset):
    """A stock ultralytics YOLOv8n trained here loads through SDGAS and through ultralytics' own YOLO class."""
    from ultralytics import YOLO

    for name in ("best.pt", "last.pt"):
        model = SDGAS(yolov8n_weights / name)
        assert type(model.model).__name__ == "DetectionModel" and model.task == "detect"
    assert YOLO(yolov8n_weights / "best.pt").model.yaml["scale"] == "n"
    metrics = SDGAS(yolov8n_weights / "best.pt").val(data=str(neu_subset), imgsz=64, batch=8, plots=False)
    assert metrics.box.map >= 0


@pytest.mark.slow  # trains a model
def test_fused_and_distillation_checkpoints_load(sdgas_weights, tmp_path):
    """A fused model saved with Model.save (pickles `forward_fuse` via getattr) and a distillation EMA as the trainer
    pickles it mid-run (DistillationModel, FeatureHook hooks in the student, teacher dropped) both load."""
    from ultralytics.nn.distill_model import DistillationModel
    from ultralytics.utils import IterableSimpleNamespace

    model = SDGAS(sdgas_weights / "best.pt")
    model.model.fuse(verbose=False)
    model.save(tmp_path / "fused.pt")
    assert SDGAS(tmp_path / "fused.pt").model.is_fused()

    student = SDGAS(sdgas_weights / "best.pt").model
    student.args = IterableSimpleNamespace(imgsz=64, dis=1.0)  # the trainer's args type
    wrapper = DistillationModel(str(sdgas_weights / "best.pt"), student)  # the teacher loads through the allow-list
    wrapper.teacher_model = None  # as ModelEMA keeps it
    torch.save({"epoch": 0, "model": None, "ema": wrapper, "optimizer": {}}, tmp_path / "distill.pt")
    ckpt = load_checkpoint_dict(tmp_path / "distill.pt")
    assert type(ckpt["ema"]) is DistillationModel
    assert any(type(h).__name__ == "FeatureHook" for m in ckpt["ema"].modules() for h in m._forward_hooks.values())


def test_allow_list_admits_sdgas_classes_and_refuses_other_globals():
    """Every sdgas layer and the self-distillation wrapper may be restored; builtins, os, ultralytics functions,
    whole-program loaders and torch's own size-taking callables may not be named."""
    from sdgas.nn.distill_model import SelfDistillModel
    from sdgas.nn.modules import CSA, SDHead

    names = AllowList.names()
    for cls in (CSA, SDHead, SelfDistillModel):
        assert f"{cls.__module__}.{cls.__qualname__}" in names
    assert "sdgas.nn.tasks.SDGASDetectionModel" in names and "ultralytics.nn.tasks.DetectionModel" in names
    for name in ("builtins.eval", "posix.system", "ultralytics.nn.tasks.torch_load", "ultralytics.nn.tasks.parse_model",
                 "sdgas.cli.main", "ultralytics.nn.autobackend.AutoBackend", "builtins.bytearray",
                 "torch._utils._rebuild_meta_tensor_no_storage", "antigravity.fly"):
        assert name not in names


@pytest.mark.slow  # trains a model
def test_damaged_and_foreign_files_get_one_line_errors(sdgas_weights, tmp_path):
    """Truncated, text renamed .pt, empty, a bare state_dict, a classification model: one line, no torch traceback."""
    from ultralytics.nn.tasks import ClassificationModel

    best = (sdgas_weights / "best.pt").read_bytes()
    files = {"truncated": best[: len(best) // 2], "text": b"these are not weights\n", "empty": b""}
    for name, data in files.items():
        (tmp_path / f"{name}.pt").write_bytes(data)
    torch.save(load_checkpoint_dict(sdgas_weights / "best.pt")["model"].state_dict(), tmp_path / "state_dict.pt")
    torch.save({"model": ClassificationModel("yolov8n-cls.yaml", nc=6, verbose=False)}, tmp_path / "classify.pt")
    expected = {"truncated": "truncated, corrupted", "text": "truncated, corrupted", "empty": "empty",
                "state_dict": "bare state_dict", "classify": "not a detection head"}
    for name, words in expected.items():
        with pytest.raises(CheckpointError) as e:
            SDGAS(tmp_path / f"{name}.pt")
        assert words in str(e.value) and "\n" not in str(e.value) and f"{name}.pt" in str(e.value)
        chained = e.value.__cause__ or (None if e.value.__suppress_context__ else e.value.__context__)
        assert chained is None  # no torch traceback printed under the one line


@pytest.mark.slow  # trains a model
def test_resume_with_another_class_count_is_one_line(sdgas_weights, neu_subset, tmp_path):
    """Resuming a 6-class checkpoint on a 1-class dataset: one line naming both class counts."""
    folder = tmp_path / "one-class"
    for split in ("train", "val"):
        (folder / "labels" / split).mkdir(parents=True)
        (folder / "images").mkdir(exist_ok=True)
        (folder / "images" / split).symlink_to(neu_subset.parent / "images" / split, target_is_directory=True)
        for label in (neu_subset.parent / "labels" / split).glob("*.txt"):
            rows = [f"0 {line.split(maxsplit=1)[1]}" for line in label.read_text().splitlines() if line.strip()]
            (folder / "labels" / split / label.name).write_text("\n".join(rows) + "\n")
    data = folder / "data.yaml"
    data.write_text(f"path: {folder}\ntrain: images/train\nval: images/val\nnc: 1\nnames:\n  0: defect\n")
    with pytest.raises(CheckpointError, match=r"trained for 6 classes but the dataset .* has 1") as e:
        SDGAS(sdgas_weights / "epoch0.pt").train(resume=True, data=str(data))
    assert "\n" not in str(e.value)


@pytest.mark.slow  # trains a model
def test_safetensors_export_round_trips(sdgas_weights, yolov8n_weights, neu_subset, tmp_path):
    """format=safetensors holds only a JSON header and raw tensors, and rebuilds a model with identical outputs."""
    images = str(neu_subset.parent / "images" / "val")
    x = torch.rand(2, 3, 64, 64)
    for weights in (sdgas_weights / "best.pt", yolov8n_weights / "best.pt"):
        source = SDGAS(weights)
        file = source.export(format="safetensors")
        assert file.endswith(".safetensors")
        raw = open(file, "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8: 8 + n])
        tensors = [v for k, v in header.items() if k != "__metadata__"]
        tensor_bytes = sum(v["data_offsets"][1] - v["data_offsets"][0] for v in tensors)
        assert 8 + n + tensor_bytes == len(raw)  # nothing in the file besides the header and the tensors
        loaded = SDGAS(file)
        assert type(loaded.model) is type(source.model) and loaded.model.names == source.model.names
        with torch.no_grad():
            a, b = source.model.eval()(x), loaded.model.eval()(x)
        a, b = (a[0], b[0]) if isinstance(a, (list, tuple)) else (a, b)
        assert torch.equal(a, b)
        for r1, r2 in zip(source.predict(images, imgsz=64, conf=0.001, verbose=False),
                          loaded.predict(images, imgsz=64, conf=0.001, verbose=False)):
            assert torch.equal(r1.boxes.data, r2.boxes.data)


@pytest.mark.slow  # trains a model
def test_safetensors_cli_and_hostile_config(sdgas_weights, tmp_path):
    """`sdgas export format=safetensors` writes the file; a weights file whose config would run code is refused."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    best = tmp_path / "best.pt"
    best.write_bytes((sdgas_weights / "best.pt").read_bytes())
    result = run_cli("export", f"model={best}", "format=safetensors")
    assert result.returncode == 0, result.stderr[-2000:]
    file = tmp_path / "best.safetensors"
    with safe_open(str(file), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    marker = tmp_path / "pwned"
    yaml = json.loads(meta["model_yaml"])
    yaml["activation"] = f"__import__('os').system('touch {marker}')"
    save_file(tensors, str(tmp_path / "hostile.safetensors"), metadata={**meta, "model_yaml": json.dumps(yaml)})
    with pytest.raises(UnsafeCheckpointError, match="activation"):
        SDGAS(tmp_path / "hostile.safetensors")
    assert not marker.exists()
    save_file({k: v for k, v in list(tensors.items())[1:]}, str(tmp_path / "short.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="do not fit"):
        SDGAS(tmp_path / "short.safetensors")


def fake_trainer(folder):
    """The attributes save_model touches, with previous checkpoints in place."""
    wdir = folder / "weights"
    wdir.mkdir()
    (wdir / "last.pt").write_bytes(b"previous last")
    (wdir / "best.pt").write_bytes(b"previous best")
    return SimpleNamespace(wdir=wdir, last=wdir / "last.pt", best=wdir / "best.pt")


def test_failed_save_leaves_previous_checkpoints_intact(tmp_path):
    """A save that dies half-way (a full disk) leaves last.pt/best.pt as they were and no staged files behind."""
    trainer = fake_trainer(tmp_path)
    with pytest.raises(OSError, match="No space"):
        with staged_checkpoint_writes(trainer):
            trainer.last.write_bytes(b"new last")
            with open(trainer.best, "wb") as f:
                f.write(b"half of the new b")
                raise OSError(28, "No space left on device")
    assert trainer.last == trainer.wdir / "last.pt"  # paths restored
    assert (trainer.wdir / "last.pt").read_bytes() == b"previous last"
    assert (trainer.wdir / "best.pt").read_bytes() == b"previous best"
    assert sorted(p.name for p in trainer.wdir.iterdir()) == ["best.pt", "last.pt"]
    with staged_checkpoint_writes(trainer):
        trainer.last.write_bytes(b"new last")
        (trainer.wdir / "epoch3.pt").write_bytes(b"epoch 3")
    assert (trainer.wdir / "last.pt").read_bytes() == b"new last"
    assert sorted(p.name for p in trainer.wdir.iterdir()) == ["best.pt", "epoch3.pt", "last.pt"]


@pytest.mark.slow  # trains a model
def test_strip_optimizer_is_atomic_and_safe(sdgas_weights, tmp_path, monkeypatch):
    """The end-of-training strip loads through the allow-list, and a failing write leaves the checkpoint intact."""
    epoch0 = tmp_path / "epoch0.pt"
    epoch0.write_bytes((sdgas_weights / "epoch0.pt").read_bytes())
    before = epoch0.read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        open(f, "wb").write(b"partial")
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(torch, "save", full_disk)
        with pytest.raises(OSError):
            strip_optimizer_atomic(epoch0)
    assert epoch0.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["epoch0.pt"]
    assert strip_optimizer_atomic(epoch0)["optimizer"] is None
    assert load_checkpoint_dict(epoch0)["epoch"] == -1


@pytest.mark.slow  # trains a model
def test_final_strip_keeps_last_resumable_until_the_end(sdgas_weights, tmp_path):
    """During the final evaluation last.pt still holds its optimizer state; it is stripped afterwards."""
    wdir = tmp_path / "weights"
    wdir.mkdir()
    for name in ("last.pt", "best.pt"):
        (wdir / name).write_bytes((sdgas_weights / "epoch0.pt").read_bytes())
    trainer = SimpleNamespace(last=wdir / "last.pt", best=wdir / "best.pt")
    seen = {}
    with atomic_final_strip(trainer):
        import ultralytics.engine.trainer as trainer_module

        trainer_module.strip_optimizer(trainer.last)
        trainer_module.strip_optimizer(trainer.best, updates={"train_results": {}})
        seen = {name: load_checkpoint_dict(wdir / name)["epoch"] for name in ("last.pt", "best.pt")}
    assert seen == {"last.pt": 0, "best.pt": -1}
    assert load_checkpoint_dict(wdir / "last.pt")["epoch"] == -1


def test_truncate_results_csv(tmp_path):
    """Rows of unsaved epochs, repeated epochs and a half-written last line are dropped; the header stays."""
    csv = tmp_path / "results.csv"
    csv.write_text("epoch,time,loss\n1,1.0,0.9\n2,2.0,0.8\n3,3.0,0.7\n2,2.5,0.75\n3,3.5,0.6\n4,4.0,0.")
    assert truncate_results_csv(csv, 3) == 3
    assert csv.read_text() == "epoch,time,loss\n1,1.0,0.9\n2,2.5,0.75\n3,3.5,0.6\n"
    assert truncate_results_csv(csv, 1) == 1
    assert csv.read_text() == "epoch,time,loss\n1,1.0,0.9\n"
