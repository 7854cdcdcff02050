"""The CPU shim: upstream's hard-coded CUDA/NCCL calls made to work on a machine without CUDA.

arcface_torch assumes a GPU everywhere (``init_process_group("nccl")``, ``torch.cuda.set_device``, ``.cuda()``,
CUDA streams, ``DistributedDataParallel(device_ids=[...])``). Without CUDA these patches stand in:

* :func:`cpu_shim` (a block, restored on exit) / :func:`install_cpu_shim` (process-wide, for
  ``tools/run_upstream.py``): all of them;
* :func:`partial_fc_cpu_shim`: only ``Tensor.cuda`` as the identity, enough for ``PartialFC_V2``.

Each does nothing when CUDA is available. Nothing happens at import time, and nothing here imports
arcface_torch (upstream's sampler module, when patched, comes from
:func:`qgface_plugin.arcface.upstream.load`'s namespace).
"""
from __future__ import annotations

import contextlib
import functools
import threading

from .checkout import parameter_names

__all__ = ["cpu_shim", "install_cpu_shim", "partial_fc_cpu_shim"]

_LOCK = threading.Lock()  # install_cpu_shim: one thread patches at a time


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def _mark(fn):
    fn._qgface_shim = True
    return fn


def _tensor_cuda_identity(self, *args, **kwargs):
    """Stand-in for ``Tensor.cuda`` without CUDA: the tensor itself."""
    return self


_tensor_cuda_identity = _mark(_tensor_cuda_identity)


class _DummyStream:
    """Stand-in for ``torch.cuda.Stream`` without CUDA: every method is a no-op."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, *args, **kwargs):
        pass

    def synchronize(self):
        pass

    def record_event(self, *args, **kwargs):
        return None

    def query(self):
        return True


def _is_cuda_device(device) -> bool:
    import torch
    if isinstance(device, bool):
        return False
    if isinstance(device, int):
        return True
    if isinstance(device, str):
        return device.startswith("cuda")
    if isinstance(device, torch.device):
        return device.type == "cuda"
    return False


def _cpu_patches(sampler_module=None) -> list:
    """(owner, attribute, replacement) for every CPU shim (see :func:`cpu_shim`)."""
    import torch
    import torch.distributed as dist

    original_init_pg = dist.init_process_group

    @_mark
    @functools.wraps(original_init_pg)
    def init_process_group(*args, **kwargs):
        if args:
            if "nccl" in str(args[0]).lower():
                args = ("gloo",) + tuple(args[1:])
        elif "nccl" in str(kwargs.get("backend", "")).lower():
            kwargs["backend"] = "gloo"
        return original_init_pg(*args, **kwargs)

    @_mark
    def module_cuda(self, device=None):
        return self

    @_mark
    def set_device(device):
        return None

    @_mark
    def current_stream(device=None):
        return _DummyStream()

    @_mark
    def stream(s=None):
        return contextlib.nullcontext()

    original_to = torch.Tensor.to

    @_mark
    @functools.wraps(original_to)
    def tensor_to(self, *args, **kwargs):
        if "device" in kwargs and _is_cuda_device(kwargs["device"]):
            kwargs["device"] = "cpu"
        if args and _is_cuda_device(args[0]):
            args = ("cpu",) + tuple(args[1:])
        return original_to(self, *args, **kwargs)

    base_ddp = torch.nn.parallel.DistributedDataParallel

    class CpuDistributedDataParallel(base_ddp):
        """DistributedDataParallel that ignores ``device_ids``/``output_device`` (CPU modules need None)."""

        _qgface_shim = True

        def __init__(self, module, device_ids=None, output_device=None, *args, **kwargs):
            super().__init__(module, None, None, *args, **kwargs)

    patches = [
        (dist, "init_process_group", init_process_group),
        (torch.Tensor, "cuda", _tensor_cuda_identity),
        (torch.nn.Module, "cuda", module_cuda),
        (torch.cuda, "set_device", _mark(set_device)),
        (torch.cuda, "Stream", _DummyStream),
        (torch.cuda, "current_stream", current_stream),
        (torch.cuda, "stream", stream),
        (torch.Tensor, "to", tensor_to),
        (torch.nn.parallel, "DistributedDataParallel", CpuDistributedDataParallel),
    ]
    if sampler_module is not None and hasattr(sampler_module, "sync_random_seed"):
        fn = sampler_module.sync_random_seed
        defaults = list(fn.__defaults__ or ())
        names = parameter_names(fn)
        if "device" in names and defaults:
            pos = names.index("device") - (len(names) - len(defaults))
            if 0 <= pos < len(defaults) and defaults[pos] != "cpu":
                defaults[pos] = "cpu"
                patches.append((fn, "__defaults__", tuple(defaults)))
    return patches


_MISSING = object()


def _apply(patches) -> list:
    """Apply the patches not already in place; returns the undo records."""
    undo = []
    for owner, name, new in patches:
        current = getattr(owner, name, _MISSING)
        if getattr(current, "_qgface_shim", False) or current is new:
            continue
        own = vars(owner).get(name, _MISSING) if isinstance(owner, type) else current
        setattr(owner, name, new)
        undo.append((owner, name, own))
    return undo


def _undo(records) -> None:
    for owner, name, old in reversed(records):
        if old is _MISSING:
            with contextlib.suppress(AttributeError):
                delattr(owner, name)
        else:
            setattr(owner, name, old)


def _sampler_module(ns):
    if ns is None:
        return None
    return getattr(ns, "modules", {}).get("utils.utils_distributed_sampler")


@contextlib.contextmanager
def cpu_shim(ns=None):
    """While active, upstream's hard-coded CUDA/NCCL calls work on CPU -- only when CUDA is unavailable.

    Patches (restored on exit): ``torch.distributed.init_process_group`` with an NCCL backend uses gloo;
    ``Tensor.cuda``/``Module.cuda`` return their argument; ``torch.cuda.set_device`` does nothing;
    ``torch.cuda.Stream``/``current_stream``/``stream`` are dummies; ``Tensor.to(device=<int or cuda>)``
    goes to the CPU; ``torch.nn.parallel.DistributedDataParallel`` ignores ``device_ids``; and, given
    :func:`load`'s namespace, upstream's ``sync_random_seed`` defaults to ``device="cpu"``.
    Yields whether anything was patched (False with CUDA, or when :func:`install_cpu_shim` already did).
    """
    if _cuda_available():
        yield False
        return
    undo = _apply(_cpu_patches(_sampler_module(ns)))
    try:
        yield bool(undo)
    finally:
        _undo(undo)


def install_cpu_shim(ns=None) -> bool:
    """Process-wide :func:`cpu_shim` for launchers; idempotent (a later call with ``ns`` adds the sampler default).

    Not undone. Call it outside any ``cpu_shim()`` block: patches that block already made are not
    re-applied here and so end with the block.

    Returns True when the shim is in effect (installed now or earlier), False when CUDA is available
    and nothing was done.
    """
    if _cuda_available():
        return False
    with _LOCK:
        _apply(_cpu_patches(_sampler_module(ns)))  # never undone: no undo records kept
    return True


@contextlib.contextmanager
def partial_fc_cpu_shim():
    """While active, ``Tensor.cuda`` returns the tensor itself -- only when CUDA is unavailable.

    Enough for ``PartialFC_V2`` on CPU: its ``sample()`` and gather buffers call ``.cuda()``; everything
    else follows the input's device. Yields whether it patched anything.
    """
    if _cuda_available():
        yield False
        return
    import torch
    undo = _apply([(torch.Tensor, "cuda", _tensor_cuda_identity)])
    try:
        yield bool(undo)
    finally:
        _undo(undo)
