"""Distributed data-parallel training under ``torchrun``.

``torchrun --nproc-per-node N ...`` starts N copies of the same command with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. The training loop
calls :func:`setup` and, when those variables say there is more than one process, joins
the process group (NCCL on CUDA, gloo on the CPU), gives each process its own GPU and its
own random patches, and wraps the model in ``DistributedDataParallel``. Only rank 0 writes
files and prints.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly single-process) run.

    Attributes
    ----------
    rank, world_size, local_rank
        As set by ``torchrun`` (0, 1, 0 without it).
    backend
        ``"nccl"``, ``"gloo"`` or ``""`` when not distributed.
    owns_group
        True if :func:`setup` created the process group (and :func:`teardown` destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when not launched by ``torchrun``)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def setup(device: torch.device) -> tuple[DistributedContext, torch.device]:
    """Join the process group if launched by ``torchrun`` with several processes.

    Parameters
    ----------
    device
        The device asked for. Under ``torchrun`` a CUDA request becomes ``cuda:LOCAL_RANK``.

    Returns
    -------
    context, device
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        if device.type == "cuda":
            device = torch.device("cuda", local)
        return DistributedContext(rank, world, local, str(dist.get_backend()), False), device
    world = env_world_size()
    if world <= 1:
        return DistributedContext(), device
    if not dist.is_available():  # pragma: no cover - torch builds without distributed
        raise RuntimeError("this torch build has no torch.distributed; cannot train on several processes")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    dist.init_process_group(backend=backend)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local, backend, True), device


def any_true(flag: bool, context: DistributedContext, device: torch.device) -> bool:
    """True on every process if ``flag`` is true on any (a collective call: all must call it)."""
    if not context.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(context: DistributedContext) -> None:
    """Wait for every process (no-op when not distributed)."""
    if context.enabled:
        dist.barrier()


def teardown(context: DistributedContext) -> None:
    """Leave the process group if :func:`setup` created it."""
    if context.owns_group and dist.is_initialized():
        dist.destroy_process_group()
