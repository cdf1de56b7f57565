"""The processes of a run: one, or the ranks of a torchrun launch (gloo on CPU, nccl on GPU).

The loop asks it for the device, whether this process writes (rank 0), each process's share of a batch
(``rank``, ``size``), and the sums and barriers that keep the ranks in step.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

__all__ = ["Distributed"]


class Distributed:
    """Single process, or one rank of a torchrun launch (gloo on CPU, nccl on GPU)."""

    def __init__(self, rank: int, size: int, device: torch.device):
        self.rank, self.size, self.device = rank, size, device
        self.is_main = rank == 0

    @classmethod
    def from_environment(cls, device_name: str) -> Distributed:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if device_name == "auto":
            device_name = "cuda" if torch.cuda.is_available() else "cpu"
        cuda = device_name.startswith("cuda")
        if cuda and not torch.cuda.is_available():
            raise ValueError(f"train.device is {device_name!r} but no CUDA device is available here; "
                             "use train.device=auto (or cpu)")
        if device_name.startswith("mps") and not torch.backends.mps.is_available():
            raise ValueError(f"train.device is {device_name!r} but this machine has no Apple GPU (MPS) that torch "
                             "can use; use train.device=auto (or cpu)")
        if size == 1 and "RANK" in os.environ and os.environ["RANK"] != "0":
            raise ValueError(f"RANK={os.environ['RANK']} is set but WORLD_SIZE is not: start data-parallel runs with "
                             "torchrun (torchrun --nproc_per_node N -m gdsoftmax train CONFIG), or unset RANK")
        if size == 1:
            return cls(0, 1, torch.device(device_name))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
        if not dist.is_initialized():
            seconds = float(os.environ.get("GDSOFTMAX_DIST_TIMEOUT", "300"))
            try:
                dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=seconds))
            except (RuntimeError, ValueError, dist.DistStoreError) as error:
                raise ValueError(f"rank {os.environ.get('RANK', '?')} of {size} could not reach the other processes "
                                 f"within {seconds:g} s ({str(error).splitlines()[0][:120]}); start every rank with "
                                 "torchrun (or set MASTER_ADDR and MASTER_PORT for all), or raise "
                                 "GDSOFTMAX_DIST_TIMEOUT") from error
        return cls(dist.get_rank(), size, device)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def all_reduce(self, tensor: torch.Tensor, op=dist.ReduceOp.SUM) -> None:
        if self.size > 1:
            dist.all_reduce(tensor, op=op)

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def close(self) -> None:
        if self.size > 1 and dist.is_initialized():
            dist.destroy_process_group()
