"""Distributed helpers: the core's one door to ``torch.distributed`` (rank, world size, gathers, sums).

The core's modules reach ``torch.distributed`` only through these; the ``arcface/`` layer also calls it
directly where arcface_torch's way needs it (the process group, barriers, Partial FC's collectives).

Everything here degrades to a single process when no process group is initialised, so the same
code runs on one CPU, one GPU or many ranks.

Gradient contract of this package (see README, "Distributed training"):
  * statistics, masks and queue contents are computed from **all-gathered, detached** tensors, so
    every rank holds identical state without any broadcast;
  * losses are computed on **local** anchors only; DDP's gradient averaging (÷ world size) then
    yields the gradient of the global mean, with no world-size factor anywhere in this package.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "rank", "world_size", "gather_nograd", "all_reduce_sum_"]


def is_distributed() -> bool:
    """True when a process group is initialised (and so collectives must be called)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank, 0 without a process group."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of ranks, 1 without a process group."""
    return dist.get_world_size() if is_distributed() else 1


@torch.no_grad()
def gather_nograd(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather equally shaped tensors along dim 0, in rank order. **No gradient** flows back.

    Args:
        tensor: ``[n, ...]``, the same shape on every rank.

    Returns:
        ``[world_size * n, ...]``: rank 0's rows first. The input itself without a process group.
    """
    if not is_distributed():
        return tensor
    tensor = tensor.contiguous()
    out = torch.empty((world_size() * tensor.shape[0],) + tuple(tensor.shape[1:]),
                      dtype=tensor.dtype, device=tensor.device)
    if tensor.is_cuda:  # NCCL: one fused collective
        dist.all_gather_into_tensor(out, tensor)
    else:  # gloo lacks all_gather_into_tensor in some releases; the chunks are views of `out`
        dist.all_gather(list(out.chunk(world_size(), dim=0)), tensor)
    return out


@torch.no_grad()
def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place SUM all-reduce (no-op without a process group). Returns the tensor."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
