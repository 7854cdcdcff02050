"""The proxy-updated real-time queue bank.

Every step the queue receives the detached, L2-normalised embeddings of **both views of every
rank's images** together with their labels and a snapshot of their class centre (the raw,
un-normalised classifier row W[y] at enqueue time). When the queue is read, each entry is moved by
how far its class centre has drifted since it was stored:

    ẽ_j = e_j + (W_now[y_j] − W_snap_j) / ‖W_snap_j‖          (not renormalised; ‖e_j‖ = 1)

Storage is a preallocated ring buffer (no per-step allocation or prepend copy as in the authors'
code); every piece of state, write pointer and fill count included, is a persistent buffer, so a
checkpoint resumes the queue exactly. Empty slots carry label −1 and are never used as negatives.
Because every rank enqueues the same all-gathered rows, every rank holds an identical queue.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import dist
from .errors import QGFaceConfigError, QGFaceInputError
from .utils import at_least_fp32

__all__ = ["ProxyQueue", "fetch_centres", "CENTRE_DTYPES", "check_centre_dtype"]

_NORM_EPS = 1e-12
#: Element types the centre all-reduce of :func:`fetch_centres` can travel in (``qgface_centre_dtype``).
CENTRE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def check_queue_size(size: int, name: str = "qgface_queue_size") -> int:
    """Validate K > 0 (an integer); returns it."""
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise QGFaceConfigError(f"{name} must be a positive integer, got {size!r}")
    return size


def check_centre_dtype(dtype, name: str = "qgface_centre_dtype") -> torch.dtype:
    """``"float32"``/``"bfloat16"`` (or the torch dtype) as a torch dtype; anything else raises."""
    if isinstance(dtype, torch.dtype) and dtype in CENTRE_DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in CENTRE_DTYPES:
        return CENTRE_DTYPES[dtype]
    raise QGFaceConfigError(f"{name} must be one of {sorted(CENTRE_DTYPES)}, got {dtype!r}")


@torch.no_grad()
def fetch_centres(labels: torch.Tensor, weight: torch.Tensor, class_start: int = 0,
                  num_local: int | None = None, num_classes: int | None = None,
                  check: bool = True, transfer_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Current class centres W[labels] from a class-sharded weight, with **one** collective.

    Partial FC shards the ``[C, D]`` class-centre matrix: rank r holds rows
    ``[class_start, class_start + num_local)`` as ``weight [num_local, D]``. Every rank fills the
    rows it owns into a zero ``[n, D]`` tensor; one SUM all-reduce completes it. All ranks must call
    this with the same ``labels`` (e.g. gathered labels or the replicated queue's labels).
    A weight that holds every class (``class_start == 0`` and ``num_local == num_classes``, e.g. a
    classifier replicated under DDP) is read locally, with no collective.

    Args:
        labels: ``[n]`` global class indices.
        weight: ``[num_local, D]`` this rank's shard (the whole matrix without a process group).
        class_start: first global class held by this rank.
        num_local: rows in this rank's shard (default ``weight.shape[0]``).
        num_classes: C; if given, labels outside ``[0, C)`` raise, and a whole-matrix weight is
            recognised as replicated (without it, a process group means "sharded").
        check: validate the labels (device syncs); callers whose labels are already validated, such
            as the training step reading its own queue, pass False.
        transfer_dtype: element type of the all-reduce: ``torch.float32`` (default, exact) or
            ``torch.bfloat16`` (half the bytes; each centre arrives rounded to bf16, relative error
            ≤ 2⁻⁸ per element; the sum is exact otherwise, as every row is non-zero on one rank
            only). A weight read locally (no collective) is always exact.

    Returns:
        ``[n, D]`` float32 (float64 for a float64 weight), detached, identical on every rank.
    """
    num_local = weight.shape[0] if num_local is None else num_local
    labels = labels.reshape(-1).long()
    if check and num_classes is not None and labels.numel():
        lo, hi = (int(v) for v in torch.aminmax(labels))
        if lo < 0 or hi >= num_classes:
            raise QGFaceInputError(
                f"label {hi if hi >= num_classes else lo} is outside [0, num_classes={num_classes})")
    local = labels - class_start
    replicated = num_classes is not None and class_start == 0 and num_local >= num_classes
    if replicated or not dist.is_distributed():
        if check and labels.numel() and not bool(((local >= 0) & (local < num_local)).all()):
            raise QGFaceInputError(
                f"labels outside the classes [{class_start}, {class_start + num_local}) held by the "
                "weight, and no process group to fetch them from")
        return at_least_fp32(weight.detach().index_select(0, local))
    own = (local >= 0) & (local < num_local)
    rows = weight.detach().index_select(0, local.clamp(0, num_local - 1))
    out_dtype = torch.promote_types(rows.dtype, torch.float32)
    if transfer_dtype != torch.float32 and transfer_dtype != out_dtype:
        # rows of other ranks are +0: x + 0 = x, so the reduced value is this rank's rounded row
        rows = rows.to(transfer_dtype).masked_fill_(~own.unsqueeze(1), 0.0)
        return dist.all_reduce_sum_(rows).to(out_dtype)
    rows = at_least_fp32(rows)
    rows.mul_(own.unsqueeze(1))
    return dist.all_reduce_sum_(rows)


class ProxyQueue(nn.Module):
    """Ring buffer of K normalised features, their labels and class-centre snapshots.

    Args:
        size: K, number of entries (> 0).
        dim: D, feature dimension.
        proxy_correction: apply the centre-drift correction when reading (QGFace). False gives the
            plain "real-time queue" ablation.

    Buffers (persistent): ``features [K, D]``, ``labels [K]`` (−1 = empty), ``centres [K, D]``,
    ``centre_inv_norm [K]`` (1/‖W_snap‖, cached at enqueue), ``ptr``, ``num_filled``.

    The filled part is always the prefix ``[0, num_filled)``: slots are written in order from 0
    and only reused after wrapping.
    """

    def __init__(self, size: int, dim: int, proxy_correction: bool = True):
        super().__init__()
        self.size = check_queue_size(size)
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise QGFaceConfigError(f"embedding_size must be a positive integer, got {dim!r}")
        self.dim, self.proxy_correction = dim, proxy_correction
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("centres", torch.zeros(size, dim))
        self.register_buffer("centre_inv_norm", torch.zeros(size))
        self.register_buffer("ptr", torch.tensor(0, dtype=torch.long))
        self.register_buffer("num_filled", torch.tensor(0, dtype=torch.long))
        # host mirrors of ptr / num_filled: no device sync per step; refreshed after loading
        self._ptr, self._filled = 0, 0
        self._register_load_state_dict_pre_hook(self._check_loaded_shapes)
        self.register_load_state_dict_post_hook(lambda module, _keys: module._sync_host_state())

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, proxy_correction={self.proxy_correction}"

    @property
    def filled(self) -> int:
        """Number of valid entries (≤ K)."""
        return self._filled

    def filled_labels(self) -> torch.Tensor:
        """``[num_filled]`` labels of the valid entries (a view)."""
        return self.labels[: self._filled]

    @torch.no_grad()
    def enqueue(self, features: torch.Tensor, labels: torch.Tensor,
                centres: torch.Tensor | None, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Write rows at the pointer, wrapping around; returns the slot of each row.

        Args:
            features: ``[n, D]`` detached rows (L2-normalised here; identical on every rank, i.e.
                all-gathered).
            labels: ``[n]`` their classes (≥ 0).
            centres: ``[n, D]`` their class centres now (raw rows of the classifier weight), or
                None to fill them later with :meth:`set_centres`.
            valid: optional 0-dim bool tensor; when False (a batch with NaN/inf embeddings) the
                slots keep their contents, decided on the device without a host sync. The pointer
                still moves on, so the ring's oldest rows survive one more turn; in the first turn
                the slots stay empty (label −1, zero features: like masked entries, cosine 0).

        Returns:
            ``[n]`` long slot indices; −1 for rows not stored because n > K (only the last K rows
            of an oversized batch are kept, as with first-in-first-out).
        """
        n = features.shape[0]
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise QGFaceInputError(f"queue features must be [n, {self.dim}], got {tuple(features.shape)}")
        labels = labels.reshape(-1)
        if labels.shape[0] != n or (centres is not None and tuple(centres.shape) != (n, self.dim)):
            raise QGFaceInputError(
                f"enqueue got {n} features, {labels.shape[0]} labels and centres of shape "
                f"{None if centres is None else tuple(centres.shape)}")
        keep = min(n, self.size)
        slots = torch.full((n,), -1, dtype=torch.long, device=self.labels.device)
        written = (torch.arange(keep, device=slots.device) + self._ptr) % self.size
        slots[n - keep:] = written
        src = slice(n - keep, n)
        new_features = F.normalize(features[src].to(self.features.dtype), dim=1, eps=_NORM_EPS)
        new_labels = labels[src].long()
        if valid is not None:
            new_features = torch.where(valid, new_features, self.features.index_select(0, written))
            new_labels = torch.where(valid, new_labels, self.labels.index_select(0, written))
        self.features.index_copy_(0, written, new_features)
        self.labels.index_copy_(0, written, new_labels)
        if centres is not None:
            self.set_centres(written, centres[src], valid)
        self._ptr = (self._ptr + keep) % self.size
        self._filled = min(self.size, self._filled + keep)
        self.ptr.fill_(self._ptr)
        self.num_filled.fill_(self._filled)
        return slots

    @torch.no_grad()
    def set_centres(self, slots: torch.Tensor, centres: torch.Tensor,
                    valid: torch.Tensor | None = None) -> None:
        """Store centre snapshots ``[m, D]`` for the given slots ``[m]`` (not when ``valid`` is False)."""
        centres = centres.to(self.centres.dtype)
        inv_norm = centres.norm(dim=1).clamp_min(_NORM_EPS).reciprocal()
        if valid is not None:
            centres = torch.where(valid, centres, self.centres.index_select(0, slots))
            inv_norm = torch.where(valid, inv_norm, self.centre_inv_norm.index_select(0, slots))
        self.centres.index_copy_(0, slots, centres)
        self.centre_inv_norm.index_copy_(0, slots, inv_norm)

    @torch.no_grad()
    def corrected(self, current_centres: torch.Tensor | None) -> torch.Tensor:
        """Proxy-corrected valid entries ẽ = e + (W_now[y] − W_snap)/‖W_snap‖.

        Args:
            current_centres: ``[num_filled, D]`` current centres of :meth:`filled_labels` (see
                :func:`fetch_centres`). Ignored (may be None) when ``proxy_correction`` is off.

        Returns:
            ``[num_filled, D]`` float32, a new tensor (the stored entries stay untouched).
        """
        k = self._filled
        if not self.proxy_correction:
            return self.features[:k].clone()
        if current_centres is None or tuple(current_centres.shape) != (k, self.dim):
            raise QGFaceInputError(
                f"corrected() needs the current centres of the {k} filled entries as [{k}, {self.dim}], "
                f"got {None if current_centres is None else tuple(current_centres.shape)}")
        out = current_centres.to(self.centres.dtype) - self.centres[:k]      # K x D drift of each entry's centre
        out.mul_(self.centre_inv_norm[:k].unsqueeze(1))        # / ||W_snap||
        return out.add_(self.features[:k])                     # + e

    @torch.no_grad()
    def enqueue_and_correct(self, features: torch.Tensor, labels: torch.Tensor,
                            centre_lookup: Callable[[torch.Tensor], torch.Tensor],
                            valid: torch.Tensor | None = None):
        """One training step's queue work with a single centre lookup (one collective).

        Writes the rows, looks up the current centres of *all* valid entries once, uses them both
        as the new rows' snapshots (so new rows have zero correction) and to correct the queue.

        Args:
            features, labels, valid: as :meth:`enqueue`.
            centre_lookup: ``labels [m] -> centres [m, D]``, e.g. a partial of :func:`fetch_centres`.

        Returns:
            ``(corrected [num_filled, D], slots [n])``.
        """
        slots = self.enqueue(features, labels, centres=None, valid=valid)
        if not self.proxy_correction:
            # snapshots are unused without correction; keep them consistent anyway
            return self.corrected(None), slots
        labels_now = self.filled_labels()
        if valid is not None:  # slots a skipped batch left empty (−1) look up class 0; their
            labels_now = labels_now.clamp_min(0)  # zero snapshot norm cancels it (corrected: 0)
        current = centre_lookup(labels_now)
        n_written = min(features.shape[0], self.size)
        written = slots[slots.shape[0] - n_written:]
        self.set_centres(written, current.index_select(0, written), valid)
        return self.corrected(current), slots

    # -- state ---------------------------------------------------------------------------------
    def _sync_host_state(self) -> None:
        self._ptr, self._filled = int(self.ptr), int(self.num_filled)
        if not (0 <= self._ptr < self.size and 0 <= self._filled <= self.size):
            raise QGFaceInputError(
                f"corrupt queue state: ptr={self._ptr}, num_filled={self._filled}, size={self.size}")

    def _check_loaded_shapes(self, state_dict, prefix, *_args) -> None:
        feats = state_dict.get(prefix + "features")
        if feats is not None and tuple(feats.shape) != (self.size, self.dim):
            raise QGFaceConfigError(
                f"checkpoint queue has K={feats.shape[0]}, D={feats.shape[1]} but this run is configured "
                f"with qgface_queue_size={self.size}, embedding_size={self.dim}; use the checkpoint's "
                "values or start the queue afresh")

    def reset(self) -> None:
        """Empty the queue."""
        self.labels.fill_(-1)
        self.features.zero_()
        self.centres.zero_()
        self.centre_inv_norm.zero_()
        self._ptr = self._filled = 0
        self.ptr.zero_()
        self.num_filled.zero_()
