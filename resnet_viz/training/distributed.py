"""Training on several processes with PyTorch's own engine: ``torchrun`` starts one process per GPU (or
several on CPUs), ``DistributedDataParallel`` averages their gradients, NCCL carries them between GPUs
and gloo between CPU processes.

Every process runs the same ``train`` command. Each keeps the training split on its own device, takes
its 1/N share of every global batch and draws the crops and flips there; the global batch size and the
learning-rate schedule mean what they mean on one device. Only rank 0 writes files and draws progress.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run; ``World()`` is a run of one process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    backend: str = ""  # "nccl", "gloo", or "" for one process
    device: torch.device | None = None  # the device torchrun's process uses (None: the settings choose)

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and draws progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def describe(self) -> str:
        return f"{self.size} processes ({self.backend})" if self.distributed else "1 process"

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``tensor`` over all processes (the tensor itself for one process)."""
        if not self.distributed:
            return tensor
        import torch.distributed as dist

        carrier = tensor.to(self.device) if self.backend == "nccl" else tensor.cpu()
        dist.all_reduce(carrier)
        return carrier.to(tensor.device)

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Give every process rank 0's buffers (BatchNorm's running statistics), as DDP does before a forward."""
        if not self.distributed:
            return
        import torch.distributed as dist

        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


def launched() -> bool:
    """Whether torchrun (or another launcher that sets its variables) started this process as one of several."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")) and _env("WORLD_SIZE") > 1


def env_ranks() -> tuple[int, int]:
    """(rank, local rank) from the launcher's variables, (0, 0) without a launcher: usable before ``join``."""
    return (_env("RANK"), _env("LOCAL_RANK")) if launched() else (0, 0)


def join(device: str = "auto") -> World:
    """Join the process group torchrun started: NCCL with one GPU per process, gloo on CPUs.

    ``device``: "auto" takes this process's GPU (the one numbered by its local rank) where there are GPUs, else
    the CPU; "cuda" and "cpu" choose. Raises ConfigError, on every process alike, for a setup that cannot work."""
    if not launched():
        return World()
    rank, size, local_rank = _env("RANK"), _env("WORLD_SIZE"), _env("LOCAL_RANK")
    local_size = _env("LOCAL_WORLD_SIZE") or size
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device {device!r}: under torchrun each process takes the GPU of its local rank, so "
                          "the device is auto, cuda or cpu")
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        gpus = torch.cuda.device_count()
        if gpus == 0:
            raise ConfigError("device cuda was asked for, but PyTorch sees no CUDA GPU here")
        if local_size > gpus:
            raise ConfigError(f"{local_size} processes on this machine but only {gpus} GPU"
                              f"{'s' if gpus > 1 else ''}: use --nproc_per_node={gpus} or fewer")
        chosen, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(chosen)
    else:
        chosen, backend = torch.device("cpu"), "gloo"
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend, device_id=chosen if backend == "nccl" else None)
    return World(rank, size, local_rank, local_size, backend, chosen)


def leave() -> None:
    """Leave the process group (at the end of a run, or after a failure)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def local_first(world: World) -> Iterator[None]:
    """Local rank 0 of each machine goes first (decoding a folder once, into the cache); the others follow and
    read what it cached."""
    if world.local_rank != 0:
        world.barrier()
    yield
    if world.local_rank == 0:
        world.barrier()


def peer_failed(error: BaseException) -> bool:
    """Whether ``error`` is a collective that broke because another process ended (its own message says why)."""
    import torch.distributed as dist

    if isinstance(error, dist.DistError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        sign in text for sign in ("Connection closed by peer", "Connection reset by peer", "gloo", "NCCL"))


def _env(name: str) -> int:
    try:
        return int(os.environ.get(name, "0"))
    except ValueError:
        return 0
