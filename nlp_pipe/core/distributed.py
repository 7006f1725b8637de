"""Which process this is under `accelerate launch` / torchrun, and the one way corpus stages split work.

    rank(), world_size(), is_main()            from the launcher's RANK / WORLD_SIZE (0 and 1 when run plainly)
    part = shard(n)                            this rank's contiguous block of n rows (rank order = input order)
    gathered = gather(obj)                     every rank's object, in rank order, on every rank (gloo)
    value = broadcast(obj)                     the main rank's object on every rank
    barrier()
    close()                                    at the end of a launched command, on every rank

The first `gather`/`broadcast`/`barrier` here (the runner's word to the other ranks, a corpus stage's
counts) joins the launcher's rendezvous (the variables torchrun sets: MASTER_ADDR, MASTER_PORT, RANK,
WORLD_SIZE) with the backend accelerate would choose for training (see `_group`), which a training
stage's Accelerator then adopts; small Python objects (words, counts, file names) travel through gloo,
the rows themselves through the shared filesystem as part files in the staging directory. A rank waits up to
NLP_PIPE_RANK_WAIT_S (default 24 h, `rank_wait`) for the others at a gloo collective. One process
and no launcher: every function is a no-op and touches no torch state.
"""

from __future__ import annotations

import datetime
import os
import sys
from typing import Any

from .errors import UserError

_RANK = "RANK"
_WORLD = "WORLD_SIZE"
_objects: list[Any] = []  # the gloo group beside an NCCL default group (made once per process, on first use)
RANK_WAIT_ENV = "NLP_PIPE_RANK_WAIT_S"
RANK_WAIT_DEFAULT_S = 24 * 3600


def rank_wait() -> datetime.timedelta:
    """How long a rank waits at a gloo collective for the others. Some work is the main rank's alone while the
    others wait at a barrier (building the pretraining cache, merging a segment's parts) and grows with the
    corpus: torch's 30-minute default failed healthy launches on large corpora. A rank that dies ends the launch
    through the launcher (torchrun stops the others), not through this wait; NCCL groups keep torch's default,
    so a hung GPU collective is still caught."""
    seconds = os.environ.get(RANK_WAIT_ENV, "")
    try:
        return datetime.timedelta(seconds=float(seconds) if seconds else RANK_WAIT_DEFAULT_S)
    except ValueError:
        raise UserError(f"{RANK_WAIT_ENV}={seconds!r} is not a number of seconds") from None


def rank() -> int:
    return int(os.environ.get(_RANK, "0") or 0)


def world_size() -> int:
    return max(1, int(os.environ.get(_WORLD, "1") or 1))


def local_world_size() -> int:
    """Ranks of the launch on this machine (torchrun's LOCAL_WORLD_SIZE): they share its cores."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))


def is_main() -> bool:
    return rank() == 0


def shard(n: int, ranks: int | None = None, index: int | None = None) -> range:
    """Rows [n*r/R, n*(r+1)/R) for rank r of R: contiguous blocks, so concatenating the parts in rank order
    restores the input order, and sizes differ by at most one row."""
    ranks = world_size() if ranks is None else ranks
    index = rank() if index is None else index
    return range(n * index // ranks, n * (index + 1) // ranks)


def _group() -> Any:
    """The gloo group our objects travel through. The launch's default group is made with the backend accelerate
    would choose for training on this machine (NCCL with CUDA, else gloo): it outlives this call, and accelerate
    adopts an existing default group whatever its backend, so a gloo default group would make a training stage
    later in the same process (a launched pipeline: segment -> pretrain) all-reduce CUDA gradients over gloo."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():  # env:// rendezvous of torchrun / accelerate launch
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = training_backend()
        dist.init_process_group(backend, timeout=rank_wait() if backend == "gloo" else None)  # None: torch's NCCL default
    if dist.get_backend() == "gloo":
        return None
    if not _objects:
        _objects.append(dist.new_group(backend="gloo", timeout=rank_wait()))  # every rank, once, in the same order
    return _objects[0]


def training_backend() -> str:
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def backend() -> str | None:
    """The backend of the launch's default group (what a training stage's gradients went through); None when
    there is none (one process, or nothing communicated)."""
    if "torch.distributed" not in sys.modules:
        return None
    import torch.distributed as dist

    return dist.get_backend() if dist.is_available() and dist.is_initialized() else None


def gather(obj: Any, to_main: bool = False) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order, on every rank; with `to_main` on the main rank only
    (the others get [])."""
    if world_size() == 1:
        return [obj]
    import torch.distributed as dist

    group = _group()
    out: list[Any] = [None] * world_size()
    if to_main:
        dist.gather_object(obj, out if is_main() else None, dst=0, group=group)
        return out if is_main() else []
    dist.all_gather_object(out, obj, group=group)
    return out


def broadcast(obj: Any) -> Any:
    """The main rank's `obj` on every rank."""
    if world_size() == 1:
        return obj
    import torch.distributed as dist

    group = _group()
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier(group=_group())


def close() -> None:
    """Leave the launch's process group once every rank is done: wait for the others, then destroy it.
    A rank that simply exits while a peer still works can die in gloo's teardown (SIGABRT, "terminate
    called without an active exception", seen in CI after `vocab`'s gather), failing a launch whose work
    had succeeded. No-op when no group was made (one process, or a stage that never communicated)."""
    if "torch.distributed" not in sys.modules:  # never imported: nothing to leave, and no torch import cost
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier(group=_objects[0] if _objects else None)
        dist.destroy_process_group()
        _objects.clear()
