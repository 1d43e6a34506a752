"""Train test-tiny with its BatchNorm layers removed, as one process or under torchrun.

Without BatchNorm nothing depends on how a batch is split between processes, so data parallel training
must give the single-process weights (up to float summation order): this checks the sampler's shards,
the global batch, gradient averaging and accumulation together. Used by test_ddp.py:

    python ddp_no_batchnorm.py DATA PROJECT NAME
    python -m torch.distributed.run --standalone --nproc_per_node 2 ddp_no_batchnorm.py DATA PROJECT NAME
"""

from __future__ import annotations

import sys

import torch

from optkit.train import distributed
from optkit.train.config import TrainConfig
from optkit.train.trainer import Trainer


class NoBatchNormTrainer(Trainer):
    def _build_model(self, resume_ckpt) -> None:
        super()._build_model(resume_ckpt)
        for module in list(self.model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, torch.nn.BatchNorm2d):
                    setattr(module, name, torch.nn.Identity())


def config(data: str, project: str, name: str) -> TrainConfig:
    return TrainConfig(
        model="test-tiny",
        data=data,
        epochs=2,
        imgsz=32,
        batch_size=16,  # 72 images: 4 full global batches and one of 8 (4 per process)
        lr0=0.01,
        warmup_epochs=0.0,
        workers=0,
        seed=3,
        project=project,
        name=name,
    )


if __name__ == "__main__":
    NoBatchNormTrainer(config(*sys.argv[1:4]), dist=distributed.from_env()).run()
    # leave as the CLI does: gloo's threads outlive the group and can abort the interpreter's shutdown
    sys.exit(distributed.end_process(0))
