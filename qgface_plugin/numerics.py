"""Keeping the head's hot tensors out of the subnormal range.

Floats below ``torch.finfo(dtype).tiny`` (≈ 1.2e-38 in fp32) are *subnormal*. Many x86 CPUs
(Intel's AVX-512 parts in particular) compute on them through a microcode assist that is one to two
orders of magnitude slower than normal arithmetic; a matrix product whose input is full of them
runs 10–15× slower. ``torch.set_flush_denormal(True)`` would avoid that, but it sets the flag of
the calling thread only, not of the intra-op worker threads that run the products. GPUs compute
subnormals at full speed.

QGFace produces them in two places, and this module gives both a cut-off below which the value is
exactly 0 — chosen so that the value could not have changed an fp32 result:

* **The logit gate** σ(2s(q̂ − b)) of LQ rows (≈ 1e-28 with s = 64): a gated row's logits are
  within ±s·g of 0. Below :func:`negligible_gate` (s·g < ε/8, 2⁻²⁶ in fp32) every exp(x − max)
  of its softmax rounds to 1 and its loss to ln C, exactly as with g = 0, and its gradient is
  under 2⁻²⁵/s of an HQ row's (g ≥ ½): the gate is set to 0 and the row contributes exactly
  nothing.
* **The InfoNCE softmax weights** exp(s·(c − max)) over K queue entries: every row holds one
  entry equal to 1 (its maximum), so entries below ε/(2K) together move the row's sum by less than
  half an ulp of it; :func:`exp_cutoff` gives that bound as a log, and those entries are exactly 0.

One source is left, shared by every margin-softmax head (the plain ArcFace head and upstream's
alike): the softmax of a row whose scaled logits span more than ≈ 87 (s = 64, cosines 1.36 apart,
as a trained model's confident rows do) underflows. Flushing it would cost every head about two
passes over the ``[N, C]`` logit gradient; it is left alone. :func:`count_matmul_subnormals`
records what reaches the matrix products (tests, ``tools/bench_core.py``).
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["negligible_gate", "drop_negligible_gates", "exp_cutoff", "subnormal_mask",
           "count_matmul_subnormals"]


def negligible_gate(dtype: torch.dtype, scale: float) -> float:
    """Gates below this leave their row's fp32 loss exactly that of g = 0: logits within ±s·g, s·g < ε/8."""
    return torch.finfo(dtype).eps / (8.0 * float(scale))


def drop_negligible_gates(gate: torch.Tensor, scale: float) -> torch.Tensor:
    """``gate`` with every value below :func:`negligible_gate` set to exactly 0 (no device sync)."""
    return gate.masked_fill(gate < negligible_gate(gate.dtype, scale), 0.0)


def exp_cutoff(dtype: torch.dtype, num_terms: int) -> float:
    """log of the smallest exp(x − max) worth keeping in a sum of ``num_terms`` such terms.

    The sum holds exp(0) = 1, so ``num_terms`` entries each below ε/(2·num_terms) change it by less
    than half an ulp: ln(ε / (2·num_terms)) (≈ −27.7 in fp32 for 65536 terms).
    """
    return math.log(torch.finfo(dtype).eps / (2.0 * max(int(num_terms), 1)))


def subnormal_mask(t: torch.Tensor) -> torch.Tensor:
    """True where ``t`` holds a subnormal value (non-zero, below ``finfo.tiny`` in magnitude)."""
    return (t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)


_MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
            torch.ops.aten.baddbmm.default}


class _MatmulSubnormals(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.records: list[dict] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _MATMULS:
            for i, t in enumerate(args):
                if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
                    self.records.append({"op": func.__name__, "arg": i, "shape": tuple(t.shape),
                                         "subnormal": int(subnormal_mask(t).sum()), "numel": t.numel()})
        return out


@contextlib.contextmanager
def count_matmul_subnormals():
    """Record, for every matrix product run inside the block (autograd's backward included), how
    many subnormal values each input held. Yields a list of dicts (``op``, ``arg``, ``shape``,
    ``subnormal``, ``numel``). A diagnostic: it syncs on every product."""
    mode = _MatmulSubnormals()
    with mode:
        yield mode.records
