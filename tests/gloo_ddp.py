"""A CPU stand-in for CUDA devices in ultralytics' DDP path: SDGASTrainer with gloo process groups (tests only).

ultralytics launches DDP only for CUDA-style device lists and builds every rank on a CUDA device with NCCL
(`BaseTrainer._setup_ddp`). `GlooTrainer` changes exactly that: `world_size` ranks on the CPU joined by gloo.
Everything else is ultralytics' own path: `generate_ddp_command` writes the worker file and the cloudpickled state,
`torch.distributed.run` starts the ranks, each rebuilds the trainer from the pickled arguments and trains.

Each rank appends a JSON line per optimizer step to $SDGAS_DDP_RECORD/rank<r>.jsonl: a fingerprint of the gradients
(after DDP's all-reduce), the model class, the teacher, the sdgas arguments it received and whether sdgas'
checkpoint allow-list is installed in the worker.
"""

import json
import os
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
from ultralytics.utils import LOCAL_RANK, RANK
from ultralytics.utils.torch_utils import unwrap_model

from sdgas.models.detect import SDGASTrainer

WORLD_SIZE = 2
RECORD_ENV = "SDGAS_DDP_RECORD"


class GlooTrainer(SDGASTrainer):
    """SDGASTrainer training on WORLD_SIZE CPU processes joined by gloo, through ultralytics' DDP launcher."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.world_size = WORLD_SIZE
        self.ddp = LOCAL_RANK == -1  # the launching process spawns the ranks, as for device=0,1

    def _setup_ddp(self):
        """The CPU form of BaseTrainer._setup_ddp: gloo instead of NCCL, DDP without CUDA device ids, and the
        validator of every rank on the CPU (ultralytics puts a DDP rank's validator on its current CUDA device)."""
        from ultralytics.engine import validator

        dist.init_process_group("gloo", rank=RANK, world_size=self.world_size)
        ddp, autobackend = torch.nn.parallel.DistributedDataParallel, validator.AutoBackend

        def cpu_ddp(module, device_ids=None, **kwargs):  # ultralytics passes device_ids=[device.index] = [None]
            return ddp(module, **kwargs)

        def cpu_autobackend(*args, device=None, **kwargs):
            return autobackend(*args, device=torch.device("cpu"), **kwargs)

        torch.nn.parallel.DistributedDataParallel = cpu_ddp
        validator.AutoBackend = cpu_autobackend
        validator.get_torch_device_backend = lambda device_type: SimpleNamespace(current_device=lambda: 0)

    def optimizer_step(self):
        """Record this rank's gradients (already all-reduced by DDP), then step."""
        self.record_step()
        super().optimizer_step()

    def record_step(self):
        from ultralytics.nn import tasks

        grads = torch.cat([p.grad.flatten().double() for p in self.model.parameters() if p.grad is not None])
        model = unwrap_model(self.model)
        teacher = getattr(model, "teacher_model", None)
        line = {"rank": RANK, "world_size": dist.get_world_size(), "grad_sum": grads.sum().item(),
                "grad_norm": grads.norm().item(), "grad_head": grads[:64].tolist(), "model": type(model).__name__,
                "teacher": getattr(teacher, "pt_path", None) if teacher is not None else None,
                "loss_names": list(self.loss_names), "args": {k: v for k, v in vars(self.args).items()
                                                              if k.startswith("kd_") or k in ("trust", "box")},
                "safe_loading": bool(getattr(tasks.torch_safe_load, "_sdgas_safe", False))}
        folder = Path(os.environ[RECORD_ENV])
        with open(folder / f"rank{RANK}.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
