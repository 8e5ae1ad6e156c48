"""Multi-GPU training path (issue 17): ultralytics' DDP worker file for SDGASTrainer, run with gloo on the CPU.

Slow-ish (two DDP launches of two ranks each, about a minute on 2 cores): `selfdistill=True` for one epoch per stage
on the built-in demo images at imgsz 64, through `GlooTrainer` (tests/gloo_ddp.py), which swaps only the CUDA/NCCL
device setup for gloo. Stage 1 trains from the YAML, stage 2 gets the stage-1 best.pt as its teacher.
"""

import json
import math

import pytest

from gloo_ddp import RECORD_ENV, WORLD_SIZE, GlooTrainer

pytest.importorskip("cloudpickle")  # a declared dependency; the DDP launcher pickles the trainer state with it

KD_ARGS = dict(kd_alpha_min=0.05, kd_t=20.0, kd_feat=5.0)  # non-default sdgas values the workers must receive


def read_records(folder):
    """Per rank, the JSON lines its optimizer steps wrote."""
    return {r: [json.loads(line) for line in (folder / f"rank{r}.jsonl").read_text().splitlines()]
            for r in range(WORLD_SIZE)}


@pytest.mark.slow  # trains a model
def test_selfdistill_trains_through_ultralytics_ddp_workers(tmp_path, monkeypatch):
    from sdgas import SDGAS

    record = tmp_path / "record"
    record.mkdir()
    monkeypatch.setenv(RECORD_ENV, str(record))
    model = SDGAS("sdgasnet.yaml")
    model.train(GlooTrainer, selfdistill=True, epochs=1, imgsz=64, batch=8, nbs=8, workers=0, device="cpu",
                plots=False, seed=0, project=str(tmp_path), name="ddp", exist_ok=True, **KD_ARGS)

    ranks = read_records(record)
    teacher, student = (model.selfdistill_results[s] for s in ("teacher", "student"))
    for stage in (teacher, student):  # both stages finished, metrics from the checkpoints the workers saved
        assert stage["weights"].is_file() and math.isfinite(stage["metrics/mAP50-95(B)"])
    steps = [[line for line in ranks[r] if line["model"] == cls] for r in ranks for cls in ("SDGASDetectionModel",
                                                                                            "SelfDistillModel")]
    stage1, stage2 = steps[0::2], steps[1::2]  # per rank
    for per_rank in (stage1, stage2):
        assert len(per_rank[0]) == len(per_rank[1]) > 0  # every rank stepped, as often as the others
        for a, b in zip(*per_rank):  # DDP's all-reduce left the same gradients on both ranks
            assert a["world_size"] == WORLD_SIZE and {a["rank"], b["rank"]} == {0, 1}
            assert a["grad_sum"] == pytest.approx(b["grad_sum"], rel=1e-6, abs=1e-9)
            assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-6) and a["grad_norm"] > 0
            assert a["grad_head"] == pytest.approx(b["grad_head"], rel=1e-6, abs=1e-9)
    for line in stage2[0] + stage2[1]:  # the stage-2 workers distil from the stage-1 checkpoint
        assert line["teacher"] == str(teacher["weights"])
        assert {"kd_cls", "kd_dfl", "kd_feat"} <= set(line["loss_names"])
    for line in ranks[0] + ranks[1]:  # sdgas keys reached the workers, and so did the checkpoint allow-list
        assert line["args"]["kd_alpha_min"] == KD_ARGS["kd_alpha_min"] and line["args"]["kd_t"] == KD_ARGS["kd_t"]
        assert line["args"]["box"] == 2.5 and line["safe_loading"]


def test_trust_is_carried_to_fresh_processes(tmp_path):
    """A DDP worker knows only the trainer's arguments: `trust` says whether model= was trusted in the launcher."""
    from sdgas.models.detect.train import carry_trust
    from sdgas.io.checkpoint import is_trusted, trust_checkpoint

    trusted, untrusted, other = (str(tmp_path / f"{n}.pt") for n in ("trusted", "untrusted", "other"))
    trust_checkpoint(trusted)
    assert carry_trust({"model": trusted})["trust"] is True
    assert not carry_trust({"model": untrusted}).get("trust")
    assert carry_trust({"model": other, "trust": True})["trust"] and is_trusted(other)  # the worker side
