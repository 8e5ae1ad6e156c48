"""Python API round trip: train on the built-in demo data, save, reload in a fresh process, predict identically."""

import json
import subprocess
import sys

import pytest
import torch
from ultralytics.engine.results import Results
from ultralytics.utils import NUM_THREADS

from sdgas import SDGAS
from sdgas.engine.model import DEMO_IMAGES

PREDICT = dict(imgsz=64, conf=0.001, max_det=20, verbose=False, save=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """SD-GASNet trained for 2 epochs at imgsz 64 on the demo set (no data= given)."""
    project = tmp_path_factory.mktemp("runs")
    model = SDGAS("sdgasnet.yaml")
    model.train(epochs=2, imgsz=64, batch=8, workers=0, device="cpu", project=str(project), name="demo",
                plots=False, seed=0)
    return model


def boxes_of(results):
    return [r.boxes.data.numpy().round(4).tolist() for r in results]


@pytest.mark.slow  # trains a model
def test_training_writes_checkpoints_and_results(trained):
    save_dir = trained.trainer.save_dir
    assert (save_dir / "weights" / "best.pt").is_file() and (save_dir / "weights" / "last.pt").is_file()
    rows = (save_dir / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 and "train/box_loss" in rows[0]


@pytest.mark.slow  # trains a model
def test_bottlerep_scales_are_not_weight_decayed(trained):
    groups = trained.trainer.optimizer.param_groups
    scale_ids = {id(p) for n, p in trained.trainer.model.named_parameters() if n.endswith(".alpha")}
    assert len(scale_ids) == 12  # 3 BottleReps in each of the four CS blocks
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    undecayed = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert not scale_ids & decayed and scale_ids <= undecayed


@pytest.mark.slow  # trains a model
def test_reload_in_fresh_process_predicts_identical_boxes(trained, tmp_path):
    best = trained.trainer.best
    in_process = boxes_of(SDGAS(best).predict(str(DEMO_IMAGES), **PREDICT))
    assert sum(len(b) for b in in_process) > 0, "no detections to compare"
    script = (f"import json, sdgas; r = sdgas.SDGAS({str(best)!r}).predict({str(DEMO_IMAGES)!r}, **{PREDICT!r}); "
              f"print(json.dumps([x.boxes.data.numpy().round(4).tolist() for x in r]))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == in_process


@pytest.mark.slow  # trains a model
def test_predict_without_source_uses_demo_images(trained):
    results = SDGAS(trained.trainer.best).predict(**PREDICT)
    assert len(results) == len(list(DEMO_IMAGES.glob("*.jpg"))) and isinstance(results[0], Results)


@pytest.fixture
def inference_threads(monkeypatch):
    """cpu_inference_threads() answers one more than ultralytics' cpu_count - 1 (as OMP_NUM_THREADS set before
    import would), so the two settings always differ; torch threads restored after."""
    threads = NUM_THREADS + 1
    monkeypatch.setattr("sdgas.utils.OMP_THREADS_AT_IMPORT", str(threads))
    before = torch.get_num_threads()
    yield threads
    torch.set_num_threads(before)


@pytest.mark.slow  # trains a model
def test_cpu_predict_and_val_use_inference_threads_not_ultralytics_training_count(trained, inference_threads):
    """ultralytics' device selection sets cpu_count - 1 torch threads (1 on a 2-core machine, half the speed);
    prediction and standalone validation on the CPU then set cpu_inference_threads()."""
    SDGAS(trained.trainer.best).predict(**PREDICT, device="cpu")
    assert torch.get_num_threads() == inference_threads
    torch.set_num_threads(1)
    SDGAS(trained.trainer.best).val(imgsz=64, batch=8, workers=0, plots=False, device="cpu")
    assert torch.get_num_threads() == inference_threads


def test_cpu_inference_threads_are_the_usable_physical_cores(monkeypatch):
    """Without OMP_NUM_THREADS: the physical cores, capped by the CPUs this process may run on (taskset, cgroups)."""
    import os

    import psutil

    from sdgas.utils import cpu_inference_threads

    monkeypatch.setattr("sdgas.utils.OMP_THREADS_AT_IMPORT", None)
    usable = len(os.sched_getaffinity(0))
    assert cpu_inference_threads() == min(usable, psutil.cpu_count(logical=False))


@pytest.mark.slow  # trains a model
def test_val_returns_ultralytics_metrics(trained):
    metrics = SDGAS(trained.trainer.best).val(imgsz=64, batch=8, workers=0, plots=False, device="cpu")
    assert 0.0 <= metrics.box.map <= 1.0 and "metrics/mAP50-95(B)" in metrics.results_dict


@pytest.mark.slow  # trains a model
def test_val_refuses_data_with_another_class_count(trained, tmp_path):
    demo = DEMO_IMAGES.parents[1]
    names = "\n".join(f"  {i}: c{i}" for i in range(7))
    data = tmp_path / "seven.yaml"
    data.write_text(f"path: {demo}\ntrain: images/train\nval: images/val\nnc: 7\nnames:\n{names}\n")
    with pytest.raises(ValueError, match="model has 6 classes but dataset .* has 7"):
        SDGAS(trained.trainer.best).val(data=str(data), imgsz=64, batch=8, workers=0, plots=False, device="cpu")
