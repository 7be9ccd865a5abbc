"""Where the run executes: the device, bf16 autocast, and the ``torchrun`` process group.

Under ``torchrun`` every rank simulates its shard of each round's cohort and one all-reduce
combines the sums (gloo on CPU, NCCL on GPU); per-client randomness derives from
(seed, round, client), so 1 rank and N ranks give the same metrics.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Sequence

import torch

from fednlp_bench.errors import RunError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RunError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device {name!r} requested but CUDA is not available (use --device cpu)")
    return device


def autocast_factory(device: torch.device):
    """bf16 autocast on GPUs that support it, nothing on CPU."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


@dataclass
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> "World":
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @classmethod
    def init_from_env(cls) -> "World":
        """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1); gloo on CPU, NCCL on GPU."""
        import torch.distributed as dist

        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
                dist.init_process_group("nccl")
            else:
                dist.init_process_group("gloo")
        return cls.current()

    def shard(self, clients: Sequence[int]) -> list[int]:
        """This rank's share of a cohort (every ``size``-th client)."""
        return list(clients[self.rank :: self.size])

    def all_reduce(self, tensor: torch.Tensor) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.all_reduce(tensor)
