"""A training process's set-up: process group and device, cuDNN/TF32 switches, seeds, the DDP wrapper.

:func:`setup_distributed` joins torchrun's process group (NCCL on GPUs, gloo elsewhere) or makes a
1-process group (Partial FC needs one even then); :func:`wrap_ddp` wraps the backbone as the training
loop runs it (static graph, no per-forward buffer sync, fp16 gradient compression across ranks).
"""
from __future__ import annotations

import inspect
import os
import random
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..utils import free_port

__all__ = ["setup_distributed", "configure_device", "seed_everything", "ddp_kwargs", "wrap_ddp"]

#: How long a collective may wait for the other ranks before the process group gives up.
PROCESS_GROUP_TIMEOUT = timedelta(minutes=30)


def setup_distributed():
    """Initialise the process group (torchrun's env, else a 1-process group); returns (rank, local_rank, world, device)."""
    cuda = torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            dist.init_process_group(backend, init_method="env://", timeout=PROCESS_GROUP_TIMEOUT)
        else:  # Partial FC needs a process group even for one process
            dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}",
                                    rank=0, world_size=1, timeout=PROCESS_GROUP_TIMEOUT)
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return rank, local_rank, world, device


def configure_device(cfg, device) -> None:
    """Upstream's cuDNN autotuning, and TF32 matrix products/convolutions (``config.tf32``) on GPUs."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(cfg.tf32)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def ddp_kwargs() -> dict:
    """DDP arguments: a static graph, and BatchNorm statistics not synchronised at each forward.

    Upstream's train_v2 passes ``broadcast_buffers=False, find_unused_parameters=True`` and then calls
    ``_set_static_graph()``. The loss reaches every parameter at every step (the QGFace loss and the
    Partial FC keep a zero term that touches all of them), so the graph is static and there is no
    unused parameter to look for: ``static_graph=True`` alone (with it DDP ignores
    ``find_unused_parameters`` and warns about it). torch >= 2.13 renamed ``broadcast_buffers`` to
    ``forward_sync_buffers`` and warns about the old name; the new one also broadcasts the buffers once
    at construction, which changes nothing here: the backbone's buffers are BatchNorm's initial
    statistics, the same on every rank (a resumed run loads its checkpoint after construction).
    """
    kwargs = {"static_graph": True}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        kwargs["forward_sync_buffers"] = False
    else:
        kwargs["broadcast_buffers"] = False
    return kwargs


def wrap_ddp(backbone: torch.nn.Module, device: torch.device, world: int) -> DistributedDataParallel:
    """The backbone (already on ``device``) under DDP with :func:`ddp_kwargs`; gradients travel as fp16
    between ranks (``fp16_compress_hook``, as upstream's train_v2) when there are several."""
    backbone = DistributedDataParallel(
        backbone, device_ids=[device.index] if device.type == "cuda" else None, bucket_cap_mb=16,
        **ddp_kwargs())
    if world > 1:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import fp16_compress_hook
        backbone.register_comm_hook(None, fp16_compress_hook)
    return backbone
