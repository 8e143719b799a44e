"""One training run of a tiny ResNet on synthetic data, as the distributed tests need it: started by torchrun
(``python worker.py SPEC_JSON``) or called in the test process for the one-process reference.

Each process writes what the tests compare into its own report file (first-step gradients, the epochs'
metrics, the final weights); the training run itself writes only where the trainer decides to."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from resnet_viz import ResNetConfig
from resnet_viz.data import synthetic_dataset
from resnet_viz.training import Trainer, TrainSettings, distributed, load_resume

TINY = ResNetConfig(name="tiny", widths=(8, 16), blocks=(1, 1), strides=(1, 2))


def train(spec: dict[str, Any], world: distributed.World | None = None) -> dict[str, Any]:
    """Train as ``spec`` says: ``settings`` (TrainSettings fields), ``out`` (each rank gets ``out/rank<R>``, so
    a file written by any rank but 0 would show), optional ``resume`` (a checkpoint) and ``stop`` ([rank, step]:
    that rank alone asks for a stop after that step)."""
    world = world or distributed.World()
    torch.set_num_threads(1)  # the same kernels, in the same order, in every process and in the reference
    data = synthetic_dataset(train_per_class=128, val_per_class=32)
    resume = load_resume(spec["resume"]) if spec.get("resume") else None
    settings = resume.settings_with(**spec.get("changes", {})) if resume else TrainSettings(**spec["settings"])
    trainer = Trainer(resume.config if resume else TINY, data, settings,
                      out_dir=Path(spec["out"]) / f"rank{world.rank}", world=world, resume=resume)
    grads: dict[str, torch.Tensor] = {}
    stop_rank, stop_step = spec.get("stop", (-1, -1))

    def on_backward(step: int, model: torch.nn.Module) -> None:
        if step == 1:
            grads.update({name: p.grad.detach().clone() for name, p in model.named_parameters()})

    def on_progress(p) -> None:
        if world.rank == stop_rank and p.step == stop_step:
            trainer.stop()

    result = trainer.run(on_backward=on_backward, on_progress=on_progress)
    return {"grads": grads, "history": result.history, "steps": result.steps, "stopped": result.stopped,
            "val_acc": result.val_acc, "per_class": result.per_class, "files": result.files,
            "weights": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}}


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    world = distributed.join("cpu")
    try:
        report = train(spec, world)
        torch.save(report, Path(spec["report"]) / f"rank{world.rank}.pt")
    finally:
        distributed.leave()
