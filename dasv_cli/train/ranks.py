"""This process's place in a run (rank, world, device) and the collectives the loop needs.

One process is a world of one: every collective is then the identity, so the loop reads the same
with and without DDP. dasv_cli.train.distributed fills the context for the ranks it starts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

_OPS = ("sum", "max", "min")


@dataclass
class RunContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives (identities in a world of one) --------------------------------------------
    def _tensor(self, values: list[float]):
        import torch

        return torch.tensor(values, dtype=torch.float64 if self.device == "cpu" else torch.float32,
                            device=self.device)

    def all_reduce(self, values: list[float], op: str = "sum") -> list[float]:
        """`values` reduced element-wise over the ranks with `op` (sum, max or min)."""
        if not self.distributed:
            return values
        import torch.distributed as dist

        if op not in _OPS:
            raise ValueError(f"unknown reduction {op!r}")
        t = self._tensor(values)
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
        return t.tolist()

    def broadcast(self, values: list[float]) -> list[float]:
        """Rank 0's `values`, on every rank."""
        if not self.distributed:
            return values
        import torch.distributed as dist

        t = self._tensor(values)
        dist.broadcast(t, src=0)
        return t.tolist()

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (picklable), in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, obj)
        return gathered


def data_parallel(module, ctx: RunContext):
    """`module` under DDP when there are several ranks (one device id per rank on GPUs)."""
    if not ctx.distributed:
        return module
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [torch.device(ctx.device).index] if ctx.device.startswith("cuda") else None
    return DDP(module, device_ids=ids)


def weights_digest(model) -> str:
    """SHA-256 of the state dict (parameters and buffers), to prove ranks hold identical weights."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def final_sync(model, ctx: RunContext) -> list[str] | None:
    """Rank 0's buffers everywhere (BatchNorm statistics are per rank between DDP's broadcasts) and
    every rank's weights digest as proof; None in a world of one."""
    if not ctx.distributed:
        return None
    import torch.distributed as dist

    for b in model.buffers():
        dist.broadcast(b.data, src=0)
    return ctx.gather(weights_digest(model))


__all__ = ["RunContext", "data_parallel", "weights_digest", "final_sync"]
