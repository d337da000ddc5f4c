"""Data-parallel training under ``torchrun``: joining the process group, the device, and decisions all ranks share.

Every rank draws its own batch (generators keyed on the rank) and DistributedDataParallel averages
the gradients, so the weights stay identical on every rank. Decisions that depend on a rank's own
view — a cancellation, the clock of a time budget, whether a checkpoint is due — are agreed with one
all-reduce, so that all ranks take the same branch and the same learning rate.
"""

from __future__ import annotations

import gc
import hashlib
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

__all__ = ["Ranks", "join_ranks", "pick_device", "weights_sha256"]


@dataclass
class Ranks:
    """This process's place among the training processes, and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this run created the process group (and tears it down)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Rank 0: the one that validates, saves and reports."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to train: ``model`` itself, or under DistributedDataParallel for several ranks."""
        if self.world <= 1:
            return model
        ids = [self.local_rank] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def agree(self, flag: bool) -> bool:
        """True on every rank if it is True on any (a checkpoint is due)."""
        if self.world <= 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def agree_on_clock(self, stop: bool, elapsed: float) -> tuple[bool, float]:
        """(stop requested on any rank, largest elapsed seconds): one all-reduce per iteration.

        Under a time budget the learning rate depends on the clock: all ranks use the largest one.
        """
        if self.world <= 1:
            return stop, elapsed
        t = torch.tensor([1.0 if stop else 0.0, elapsed], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t[0].item() > 0), float(t[1].item())

    def weight_hashes(self, model: torch.nn.Module) -> list[str] | None:
        """SHA-256 of the weights on every rank (None for a single process); a collective call."""
        if self.world <= 1:
            return None
        gathered: list[str | None] = [None] * self.world
        dist.all_gather_object(gathered, weights_sha256(model))
        return gathered

    def leave(self) -> None:
        """Tear the process group down while the interpreter is alive.

        DistributedDataParallel's reducer keeps the group (and its communication threads) alive;
        destroyed later, during interpreter exit, a still-joinable thread aborts the process. The
        caller drops its DistributedDataParallel wrapper first.
        """
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
        gc.collect()


def join_ranks(device: str) -> Ranks:
    """Join the process group that ``torchrun`` describes in the environment (if any) and pick the device."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(device=pick_device(device, 0))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
        owns = True
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank, owns, pick_device(device, local_rank))


def pick_device(name: str, local_rank: int) -> torch.device:
    """``"cpu"``, ``"cuda"`` (this rank's GPU) or ``"auto"`` (CUDA when available)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was requested but no CUDA device is available")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ValueError(f"device must be cpu, cuda or auto, got {name!r}")
    return torch.device("cpu")


def weights_sha256(model: torch.nn.Module) -> str:
    """Hex SHA-256 of a module's state dict (keys in order, values as bytes)."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
