"""Counting the host-device synchronisations of a block of torch code, on any device.

On a GPU, an op that needs a tensor's *value* on the host stops the CPU until the GPU has caught up
with everything queued before it: the CPU can no longer run ahead launching kernels, and the step
serialises. :func:`count_host_syncs` records every op that would do that **on CUDA**, by name,
whatever the device the block runs on, so CPU tests can pin a training step at zero syncs.

What it counts (each becomes one :class:`SyncRecord`):

* ``aten._local_scalar_dense`` / ``aten.item`` / ``aten.is_nonzero``: ``.item()``, ``int()``,
  ``float()``, ``bool()`` of a tensor (``if t:``, ``aminmax`` followed by ``int()``, ``allclose`` ...);
* data-dependent output shapes: ``aten.nonzero`` (``torch.nonzero``, ``torch.where(cond)``,
  ``argwhere``), ``aten.masked_select``, ``aten.index.Tensor`` and ``aten.index_put(_)`` with a bool
  or uint8 index (``x[mask]``, ``x[mask] = v``), ``aten.unique*`` / ``aten._unique*``,
  ``aten.repeat_interleave`` without ``output_size``, ``aten.bincount``
  (``aten.nonzero_static`` has a fixed size and is not counted);
* ``aten.equal`` (``torch.equal``);
* copies between devices that are not ``non_blocking`` (``aten._to_copy``, ``aten.copy_``:
  ``.cpu()``, ``.cuda()``, ``.to(other_device)``; ``.tolist()`` and ``.numpy()`` of a CUDA tensor
  go through such a copy);
* ``aten.lift_fresh``: a tensor made from Python data (``torch.tensor``, ``x.new_tensor``,
  ``torch.as_tensor(list)``); on CUDA that is a blocking host-to-device copy. It is recorded on every
  device, because on the CPU the harness cannot tell where the tensor would have gone (a tensor that
  is meant to stay on the host is then a false positive: build it with ``torch.full`` instead).

Each record names the op, a short location (``file:line in function``) of the innermost caller
outside torch, the phase (``forward``/``backward``), the autograd node for ops run by backward, and
whether the op belongs to this package (:attr:`SyncRecord.in_plugin`). Ops that the autograd engine's
C++ hooks and callbacks run in backward with no Python frame of their own (DDP's reducer: 4 per step with
``static_graph``) are recorded at :data:`ENGINE_CALLBACK`, not at the line that called ``backward()``, and
are not this package's. Ops that a built-in autograd
node runs in backward are attributed to the Python line that created the node in the forward
(a ``TorchFunctionMode`` tags the nodes as they are made); ops of a custom
``autograd.Function.backward`` to that method's own line.

What it cannot see:

* syncs inside kernels or below the dispatcher: a kernel that calls ``cudaStreamSynchronize`` or a
  synchronous ``cudaMemcpy`` itself, the caching allocator, NCCL/gloo collectives (gloo ones block
  the host by design), ``torch.cuda.synchronize()``, events and streams;
* ops inside another op's composite kernel are seen only as the outer op (e.g. ``torch.allclose``
  is seen as the ``_local_scalar_dense`` it ends in, which is what syncs);
* ``.tolist()`` / ``.numpy()`` of a **CPU** tensor (no op is dispatched);
* syncs that depend on the device's implementation rather than on the op (an op that syncs on one
  CUDA version and not another).

On a GPU, complement it with ``torch.cuda.set_sync_debug_mode("warn")`` (or ``"error"``), which
flags the synchronising CUDA calls that kernels actually make but cannot say which Python line
asked for the value; the two can be active together::

    torch.cuda.set_sync_debug_mode("error")
    with count_host_syncs() as syncs:
        loss, _ = criterion(embeddings, labels)
        loss.backward()
    torch.cuda.set_sync_debug_mode("default")
    assert not syncs.plugin(), syncs.summary()

It is a diagnostic (tests, traces): every op pays a Python call, and every op that makes an autograd
node pays a walk of the Python stack.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["SyncRecord", "SyncLog", "count_host_syncs", "SYNC_OPS", "ENGINE_CALLBACK"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))
_THIS_FILE = os.path.abspath(__file__)
_TAG = "qgface_sync_where"
#: ``SyncRecord.where`` of ops that a C++ hook or callback of the autograd engine runs (DDP's reducer).
ENGINE_CALLBACK = "<autograd engine: C++ hook or callback, e.g. DDP's reducer>"

#: Ops that always need a value on the host (by ``OpOverloadPacket`` name).
SYNC_OPS = frozenset({
    "_local_scalar_dense", "item", "is_nonzero", "equal",
    "nonzero", "masked_select", "bincount",
    "unique", "unique_dim", "unique_consecutive", "unique_dim_consecutive", "_unique", "_unique2",
})
_BOOL_INDEX_OPS = frozenset({"index", "index_put", "index_put_", "_index_put_impl_", "_unsafe_index_put"})
_REPEAT_INTERLEAVE = "repeat_interleave"
_COPY_OPS = frozenset({"_to_copy", "copy_", "copy"})


@dataclass(frozen=True)
class SyncRecord:
    """One op that would synchronise the host with a CUDA device.

    Attributes:
        op: the aten op, e.g. ``"aten.nonzero.default"``.
        where: ``"qgface_plugin/margins.py:57 in forward"`` (package files relative to the package's
            parent, other files by name), or ``"<autograd XBackward0>"`` when unknown.
        phase: ``"forward"`` or ``"backward"``.
        node: the autograd node running the op in backward (None in forward).
        in_plugin: the op was asked for by code of this package.
        detail: why it syncs, when not obvious from the op (e.g. ``"bool index"``, ``"cpu -> cuda:0"``).
    """

    op: str
    where: str
    phase: str
    node: str | None = None
    in_plugin: bool = False
    detail: str = ""

    def __str__(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        node = f" [{self.node}]" if self.node else ""
        return f"{self.op}{extra} at {self.where}, {self.phase}{node}"


class SyncLog(list):
    """The records of one :func:`count_host_syncs` block (a list of :class:`SyncRecord`)."""

    def plugin(self) -> list:
        """Records of ops this package asked for (upstream's and the caller's left out)."""
        return [r for r in self if r.in_plugin]

    def unattributed(self) -> list:
        """Backward records whose autograd node has no known creator."""
        return [r for r in self if r.where.startswith("<")]

    def summary(self, records=None) -> str:
        records = self if records is None else records
        return "\n".join(str(r) for r in records) or "no host syncs"


def _frames():
    """(frame, absolute path, outside torch and this module) from the caller's caller outwards."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if not path.startswith("<"):
            path = os.path.abspath(path)
        yield frame, path, path != _THIS_FILE and not path.startswith(_TORCH_DIR + os.sep)
        frame = frame.f_back


def _frame_location():
    """(where, in_plugin) of the innermost Python frame outside torch and this module."""
    for frame, path, outside in _frames():
        if outside:
            in_plugin = path.startswith(_PACKAGE_DIR + os.sep)
            if in_plugin:
                name = os.path.relpath(path, os.path.dirname(_PACKAGE_DIR)).replace(os.sep, "/")
            else:
                name = os.path.basename(path)
            return f"{name}:{frame.f_lineno} in {frame.f_code.co_name}", in_plugin
    return "<unknown>", False


def _engine_callback() -> bool:
    """The op runs inside the autograd engine's ``run_backward`` with no Python frame of its own between: a
    C++ hook or callback (DDP's reducer bookkeeping, for one), not code of the caller's. Python hooks and
    custom ``Function.backward`` methods have their own frame, so they are not this."""
    for frame, _, outside in _frames():
        if outside:
            return False
        if frame.f_code.co_name == "_engine_run_backward":
            return True
    return False


def _is_bool_index(indices) -> bool:
    return any(isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8) for t in (indices or ()))


def _device_of(value):
    return None if value is None else torch.device(value)


def _sync_detail(func, args, kwargs):
    """Why ``func(*args, **kwargs)`` syncs (a string, "" for the plain ops), or None if it does not."""
    name = func.overloadpacket.__name__
    if name in SYNC_OPS:
        return ""
    if name in _BOOL_INDEX_OPS:
        indices = args[1] if len(args) > 1 else kwargs.get("indices")
        return "bool index" if _is_bool_index(indices) else None
    if name == _REPEAT_INTERLEAVE:
        return None if kwargs.get("output_size") is not None else "no output_size"
    if name == "lift_fresh":
        return "tensor from host data (a blocking host-to-device copy on CUDA)"
    if name in _COPY_OPS:
        if name == "_to_copy":
            src, dst = args[0].device, _device_of(kwargs.get("device")) or args[0].device
        else:
            dst, src = args[0].device, args[1].device
        non_blocking = kwargs.get("non_blocking", args[2] if len(args) > 2 else False)
        if src != dst and not non_blocking:
            return f"{src} -> {dst}"
    return None


class _TagNodes(TorchFunctionMode):
    """Tag each autograd node made inside the block with the Python line that made it."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if torch.is_grad_enabled():
            outs = out if isinstance(out, (tuple, list)) else (out,)
            roots = [t.grad_fn for t in outs if isinstance(t, torch.Tensor) and t.grad_fn is not None]
            if roots:
                where = None
                stack = roots
                while stack:  # the node and the untagged nodes it was built from (composite ops)
                    node = stack.pop()
                    if node is None or _TAG in node.metadata:
                        continue
                    if where is None:
                        where = _frame_location()
                    node.metadata[_TAG] = where
                    stack.extend(fn for fn, _ in node.next_functions)
        return out


class _RecordSyncs(TorchDispatchMode):
    def __init__(self, log: SyncLog):
        super().__init__()
        self.log = log

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        detail = _sync_detail(func, args, kwargs)
        if detail is not None:
            node = torch._C._current_autograd_node()
            where, in_plugin = _frame_location()
            phase = "forward" if node is None else "backward"
            if node is not None and not isinstance(node, torch.autograd.function.BackwardCFunction):
                # a built-in node: its creator in the forward, not the line that called backward()
                where, in_plugin = node.metadata.get(_TAG, (f"<autograd {node.name()}>", False))
            elif node is None and _engine_callback():
                # torch's own C++ work in backward (e.g. DDP's reducer), not the line that called backward()
                where, in_plugin, phase = ENGINE_CALLBACK, False, "backward"
            self.log.append(SyncRecord(
                op=str(func), where=where, phase=phase,
                node=None if node is None else node.name(), in_plugin=in_plugin, detail=detail))
        return func(*args, **kwargs)


@contextlib.contextmanager
def count_host_syncs():
    """Record every op run inside the block (autograd's backward included) that would make the
    host wait for a CUDA device; yields a :class:`SyncLog` (a list of :class:`SyncRecord`), filled
    as the block runs. Works on any device (see the module docstring for what is and is not seen).

    Example:
        >>> with count_host_syncs() as syncs:
        ...     loss, stats = criterion(embeddings, labels)
        ...     loss.backward()
        >>> assert not syncs.plugin(), syncs.summary(syncs.plugin())
    """
    log = SyncLog()
    with _TagNodes(), _RecordSyncs(log):
        yield log
