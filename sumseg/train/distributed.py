"""Where a training process runs: alone, or as one replica of a ``torchrun`` job (DDP).

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
with ``WORLD_SIZE`` > 1 :func:`setup` joins the process group from them (``env://``): NCCL when
the replica's device is CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on CPU. Without
those variables the process is a plain single process and nothing distributed is touched.
Multi-node runs need nothing more than torchrun's own flags (``--nnodes``, ``--node-rank``,
``--rdzv-endpoint`` ...) and a run folder on a file system every node sees.
"""

from __future__ import annotations

import atexit
import hashlib
import os
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sumseg.config import DEVICES
from sumseg.errors import ConfigError


@dataclass(frozen=True)
class Replica:
    """This process's place in the job: ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, checkpoints and holds the run folder's lock."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} must be an integer (set by torchrun)") from None


def _available() -> str:
    """The devices torch can use here, in words (``cpu; no CUDA device`` or ``cpu, cuda (cuda:0 to cuda:3)``)."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return "cpu" + (f", cuda (cuda:0 to cuda:{n - 1})" if n else "; no CUDA device")


def resolve_device(name: str, local_rank: int = 0, key: str = "run.device") -> torch.device:
    """``auto`` → ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``; ``cuda`` (``cuda:N``: GPU N) without
    that GPU is refused. ConfigError naming ``key`` (the config key or flag) and what this machine has."""
    index, explicit = local_rank, name.startswith("cuda:")
    if name.startswith("cuda:") and name[5:].isascii() and name[5:].isdigit():
        name, index = "cuda", int(name[5:])
    if name not in DEVICES:
        raise ConfigError(f"{key} must be one of {', '.join(DEVICES)} or cuda:N, got {name!r} "
                          f"(available here: {_available()})")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"{key} is 'cuda' but torch sees no CUDA device (available here: {_available()}); "
                          f"use {key} auto or cpu")
    if index >= torch.cuda.device_count():
        what = f"{key} cuda:{index}" if explicit else f"LOCAL_RANK {index}"
        raise ConfigError(f"{what} but this node has {torch.cuda.device_count()} CUDA devices: "
                          "start at most one process per GPU (--nproc_per_node)")
    return torch.device("cuda", index)


def setup(device: str = "auto") -> Replica:
    """This process's :class:`Replica`; joins the process group under torchrun (idempotent)."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        atexit.register(_teardown)
    return Replica(rank, world, local_rank, dev)


def _teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(replica: Replica) -> None:
    """Wait for every replica (no-op alone)."""
    if replica.world > 1:
        dist.barrier()


def main_first(replica: Replica, work: Callable[[], object]) -> None:
    """Run ``work`` on rank 0 while the other ranks wait at a barrier (a world of one just runs it)."""
    if replica.is_main:
        work()
    barrier(replica)


def all_mean(values: torch.Tensor, replica: Replica) -> torch.Tensor:
    """Mean of ``values`` (any shape, on the replica's device) over the replicas; NaN anywhere → NaN everywhere."""
    if replica.world == 1:
        return values
    out = values.clone()
    dist.all_reduce(out)
    return out / replica.world


def all_agree(value: int, replica: Replica) -> tuple[int, int]:
    """(min, max) of an integer over the replicas, e.g. to check they all resume from the same step."""
    if replica.world == 1:
        return value, value
    t = torch.tensor([value, -value], dtype=torch.int64, device=replica.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(-t[1]), int(t[0])


def weights_digest(tensors: Iterable[torch.Tensor]) -> bytes:
    """128-bit BLAKE2 digest of the bytes of ``tensors`` (in order): equal iff bit-identical, in practice."""
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        h.update(t.detach().contiguous().view(-1).view(torch.uint8).cpu().numpy().tobytes())
    return h.digest()


def replicas_agree(tensors: Iterable[torch.Tensor], replica: Replica) -> bool:
    """Whether every replica holds bit-identical ``tensors`` (their :func:`weights_digest` compared
    over the ranks; True alone). DDP keeps replicas equal only if every gradient goes through its
    backward, so the loop checks this at each save instead of trusting it."""
    if replica.world == 1:
        return True
    words = torch.frombuffer(bytearray(weights_digest(tensors)), dtype=torch.int64).to(replica.device)
    both = torch.cat([words, -words])
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    return bool((both[:2] == -both[2:]).all())


def wrap(module: nn.Module, replica: Replica) -> nn.Module:
    """``module`` in DDP when there are several replicas (gradients averaged in its backward), else itself.

    ``find_unused_parameters``: which parameters a step touches depends on its data (a step
    without boxes never uses the box-corner embeddings, one rank may draw boxes and another not),
    so DDP must be told to look. Inputs are not moved by DDP: they come on the replica's device.
    """
    if replica.world == 1:
        return module
    return DistributedDataParallel(module, device_ids=None, find_unused_parameters=True)


def no_sync(net: nn.Module, skip: bool) -> AbstractContextManager[None]:
    """DDP's ``no_sync`` when ``skip`` (an accumulation call before the last one), else nothing."""
    if skip and isinstance(net, DistributedDataParallel):
        return net.no_sync()
    return nullcontext()
