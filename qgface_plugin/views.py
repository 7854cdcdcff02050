"""Two-view augmentation for QGFace training (arXiv 2312.17494).

QGFace trains every face image in two views:

* the **H view** (high quality): the aligned face, horizontally flipped with
  probability 0.5 and nothing else;
* the **L view** (low quality): the same face passed through a degradation
  pipeline -- random downscale with a random interpolation, JPEG re-encoding
  at the small size, upscale back with another random interpolation, then
  (each with a small probability) a random resized crop, a colour jitter and a
  rotation, and finally an independent horizontal flip.

This module re-implements the authors' ``.rec`` pipeline. The down- and the
up-scale of the L view go through Pillow's ``Image.resize``, exactly as the
authors' ``torchvision.transforms.functional.resize`` on a PIL image does, so
the five random filters are PIL's: when downscaling, BILINEAR, BICUBIC
(a = -0.5), LANCZOS (3 lobes) and BOX widen their support by the scale factor
and therefore antialias; only NEAREST aliases. (OpenCV's linear, cubic and
Lanczos resizes point-sample when downscaling, so they alias.) Everything else
uses OpenCV so the transform is fast enough to feed a GPU from a few CPU cores.

Everything works on **RGB HWC uint8** numpy arrays, which is what
arcface_torch's ``MXFaceDataset`` hands to its ``transform``. The outputs are
normalised exactly like arcface_torch (RGB order kept, CHW, float32,
``(x / 255 - 0.5) / 0.5``, i.e. values in ``[-1, 1]``).

Public API:

* :class:`TwoViewTransform` -- ``img -> FloatTensor [2, 3, S, S]`` (H, L).
* :class:`FlipTransform` -- ``img -> FloatTensor [3, S, S]``, the single-view
  (H view only) baseline with the same normalisation.
* :class:`MixedViewTransform` -- ``img -> FloatTensor [3, S, S]``, the single-view
  baseline that sees QGFace's degradation distribution: the L view with
  probability ``lq_p`` (0.5 = QGFace's share of L rows), else the H view.
* ``output="uint8"`` on either: CHW uint8 instead (4x less to collate, pin and
  copy), normalised later on the device by :func:`normalise_images` with the
  same operations, so the values are bitwise the same.
* the L-view pipeline alone (:func:`~qgface_plugin.degradation.degrade`) and the operations it is made of
  are in :mod:`qgface_plugin.degradation`.

``S`` is the ``size`` argument, 112 by default. This module depends only on
numpy, OpenCV and torch (Pillow through :mod:`qgface_plugin.degradation`).
"""

import os

import cv2
import numpy as np
import torch

from .degradation import apply_degradation, as_rgb_uint8, check_params, check_prob, check_seed, check_size
from .errors import QGFaceConfigError

__all__ = ["TwoViewTransform", "FlipTransform", "MixedViewTransform", "normalise_images", "normalise_array", "OUTPUTS"]

#: what the transforms return: arcface_torch's normalised float32, or CHW uint8 for the device.
OUTPUTS = ("float", "uint8")

_F255 = np.float32(255.0)
_FHALF = np.float32(0.5)


def normalise_array(views):
    """uint8 ``[..., H, W, 3]`` -> C-contiguous float32 ``[..., 3, H, W]``.

    Computes ``(x / 255 - 0.5) / 0.5`` in float32 with the same operations as
    torchvision's ``ToTensor`` + ``Normalize(0.5, 0.5)`` (arcface_torch's
    pipeline), so the values are bitwise identical to it. The HWC->CHW
    transpose happens inside the single uint8->float32 conversion pass.
    """
    x = np.moveaxis(views, -1, -3).astype(np.float32, order="C")
    x /= _F255
    x -= _FHALF
    x /= _FHALF
    return x


def _finish(views, output):
    """uint8 HWC views -> the transform's tensor: normalised float32, or CHW uint8."""
    if output == "uint8":
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(views, -1, -3)))
    return torch.from_numpy(normalise_array(views))


def _check_output(output):
    if output not in OUTPUTS:
        raise QGFaceConfigError(f"output must be one of {OUTPUTS}, got {output!r}")
    return output


def normalise_images(x: torch.Tensor) -> torch.Tensor:
    """A batch from ``output="uint8"`` transforms as ``output="float"`` gives it (on its device).

    ``(x / 255 - 0.5) / 0.5`` in float32 with the same three IEEE operations as the numpy path
    (and torchvision's ``ToTensor`` + ``Normalize(0.5, 0.5)``), so the values are bitwise equal.
    Float input is returned unchanged.
    """
    if x.dtype != torch.uint8:
        return x
    return x.to(torch.float32).div_(255.0).sub_(0.5).div_(0.5)


# --------------------------------------------------------------------------- #
# transforms
# --------------------------------------------------------------------------- #
class _WorkerAwareRandom:
    """Owns a ``np.random.Generator`` that is re-seeded per process / worker.

    A DataLoader worker receives a copy of the transform (pickled, or inherited
    through ``fork``), generator state included, so a naive implementation
    makes every worker draw the same random stream. Instead the generator is
    (re)created lazily whenever the key ``(os.getpid(), worker_info.seed)``
    differs from the one it was built for:

    * in a DataLoader worker: ``default_rng([seed or 0, worker_seed % 2**63,
      seed is not None])`` -- torch gives every worker of every epoch its own
      ``worker_seed`` (``base_seed + worker_id``, ``base_seed`` drawn per
      epoch from the main process's torch RNG), so streams differ per worker
      and per epoch, and they are reproducible when the main process calls
      ``torch.manual_seed``;
    * outside workers with an explicit ``seed``: ``default_rng([seed, 0, 1])``
      in the process that built the transform (reproducible run to run), and
      additionally mixed with the pid in any other process;
    * outside workers without a seed: fresh OS entropy.
    """

    def __init__(self, seed):
        self._seed = check_seed(seed)
        self._owner_pid = os.getpid()
        self._rng = None
        self._rng_key = None

    def _generator(self):
        info = torch.utils.data.get_worker_info()
        key = (os.getpid(), None if info is None else info.seed)
        if key != self._rng_key:
            self._rng = self._make_generator(*key)
            self._rng_key = key
        return self._rng

    def _make_generator(self, pid, worker_seed):
        seeded = self._seed is not None
        if worker_seed is not None:
            entropy = [self._seed if seeded else 0, worker_seed % 2 ** 63, int(seeded)]
        elif not seeded:
            return np.random.default_rng()
        elif pid == self._owner_pid:
            entropy = [self._seed, 0, 1]
        else:
            entropy = [self._seed, 0, 1, pid]
        return np.random.default_rng(entropy)

    def seed_sample(self, entropy) -> None:
        """Draw the next image's augmentation from ``default_rng([seed, *entropy, 3])`` (in this process).

        The training loop's :class:`~qgface_plugin.arcface.loader.SampleSeeded` calls it with
        ``(epoch, index)`` before each image, so an image's views depend on the seed, the epoch and its
        index alone: not on the worker that draws it, the number of workers, or where a resumed run starts.
        """
        self._rng = np.random.default_rng([self._seed if self._seed is not None else 0, *map(int, entropy), 3])
        info = torch.utils.data.get_worker_info()
        self._rng_key = (os.getpid(), None if info is None else info.seed)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_rng"] = None  # always rebuilt from the key in the new process
        state["_rng_key"] = None
        return state


class TwoViewTransform(_WorkerAwareRandom):
    """QGFace two-view transform: ``img -> FloatTensor [2, 3, size, size]``.

    Usable directly as the ``transform`` of arcface_torch's ``MXFaceDataset``
    (which passes an RGB HWC uint8 numpy array). Output index 0 is the H view
    (the image, horizontally flipped with probability ``flip_p``), index 1 the
    L view (:func:`degrade`, with its own independent flip). Both views are
    normalised like arcface_torch: RGB order kept, CHW, float32,
    ``(x / 255 - 0.5) / 0.5``.

    Randomness: each instance owns a ``np.random.Generator``. It is rebuilt
    lazily in every new process and every DataLoader worker from the key
    ``(os.getpid(), torch.utils.data.get_worker_info().seed)``, so that

    * with ``seed`` given and no workers, results are reproducible run to run;
    * in DataLoader workers, every worker draws its own stream, and a new one
      every epoch (torch hands each worker a different seed per epoch); these
      streams are reproducible iff the main process seeds torch
      (``torch.manual_seed``), and ``seed`` is mixed in when given;
    * with ``seed=None`` outside workers, the generator uses OS entropy.

    Pickling/copying the transform drops the generator state (the copy starts
    a fresh stream from its key). One instance must not be called from
    several threads at once.

    Args:
        size: output side ``S`` (input images are resized to ``S x S`` first).
        scale: ``(low, high)``, ``0 < low <= high <= 1``: the downscaled side
            is ``max(floor(U(low, high) * S), 2)``.
        jpeg_quality: JPEG quality 1..100 at the small size; None skips JPEG.
        crop_p: probability of the random resized crop.
        crop_scale: ``(low, high)`` area fraction of that crop, in ``(0, 1]``.
        jitter_p: probability of the colour jitter.
        jitter: brightness/contrast/saturation strength; factors are drawn
            from ``U(max(0, 1 - jitter), 1 + jitter)``.
        rotation_p: probability of the rotation.
        rotation_degrees: rotation angle drawn from ``U(-d, d)`` degrees.
        flip_p: horizontal flip probability, drawn independently per view.
        seed: non-negative int, or None.
        output: ``"float"`` (arcface_torch's normalised float32) or ``"uint8"``
            (CHW uint8; :func:`normalise_images` on the device gives the same values).

    Raises:
        ValueError: on a bad argument; the message names the value.
    """

    def __init__(self, *, size=112, scale=(0.1, 0.5), jpeg_quality=75, crop_p=0.2,
                 crop_scale=(0.8, 1.0), jitter_p=0.2, jitter=0.2, rotation_p=0.2,
                 rotation_degrees=45.0, flip_p=0.5, seed=None, output="float"):
        size = check_size(size)
        self.output = _check_output(output)
        self._params = check_params(size, scale, jpeg_quality, crop_p, crop_scale,
                                     jitter_p, jitter, rotation_p, rotation_degrees,
                                     flip_p)
        (self.size, self.scale, self.jpeg_quality, self.crop_p, self.crop_scale,
         self.jitter_p, self.jitter, self.rotation_p, self.rotation_degrees,
         self.flip_p) = self._params
        super().__init__(seed)

    @property
    def seed(self):
        """The explicit seed given to the constructor, or None."""
        return self._seed

    def __call__(self, img):
        """Make the two views of one image.

        Args:
            img: RGB ``np.ndarray`` ``[H, W, 3]`` uint8.

        Returns:
            ``torch.FloatTensor`` ``[2, 3, size, size]`` in ``[-1, 1]``;
            ``[0]`` is the H view, ``[1]`` the L view.

        Raises:
            ValueError: if ``img`` is not an ``H x W x 3`` uint8 numpy array.
        """
        rng = self._generator()
        size = self.size
        img = as_rgb_uint8(img, size)
        views = np.empty((2, size, size, 3), dtype=np.uint8)
        if rng.random() < self.flip_p:
            cv2.flip(img, 1, dst=views[0])  # far faster than copying img[:, ::-1]
        else:
            views[0] = img
        views[1] = apply_degradation(img, rng, *self._params)
        return _finish(views, self.output)

    def __repr__(self):
        return (f"{type(self).__name__}(size={self.size}, scale={self.scale}, "
                f"jpeg_quality={self.jpeg_quality}, crop_p={self.crop_p}, "
                f"crop_scale={self.crop_scale}, jitter_p={self.jitter_p}, "
                f"jitter={self.jitter}, rotation_p={self.rotation_p}, "
                f"rotation_degrees={self.rotation_degrees}, flip_p={self.flip_p}, "
                f"seed={self._seed}, output={self.output!r})")


class FlipTransform(_WorkerAwareRandom):
    """Single-view baseline (H view only): ``img -> FloatTensor [3, size, size]``.

    Horizontal flip with probability ``flip_p``, then the same normalisation
    as :class:`TwoViewTransform` (RGB, CHW, float32, ``(x/255 - 0.5)/0.5``).
    Randomness follows the same per-process / per-worker rules.

    Args:
        size: output side ``S`` (input images are resized to ``S x S`` first).
        flip_p: horizontal flip probability.
        seed: non-negative int, or None.
        output: ``"float"`` or ``"uint8"``, as for :class:`TwoViewTransform`.

    Raises:
        ValueError: on a bad argument; the message names the value.
    """

    def __init__(self, *, size=112, flip_p=0.5, seed=None, output="float"):
        self.size = check_size(size)
        self.output = _check_output(output)
        self.flip_p = check_prob("flip_p", flip_p)
        super().__init__(seed)

    def __call__(self, img):
        """Flip and normalise one image.

        Args:
            img: RGB ``np.ndarray`` ``[H, W, 3]`` uint8.

        Returns:
            ``torch.FloatTensor`` ``[3, size, size]`` in ``[-1, 1]``.

        Raises:
            ValueError: if ``img`` is not an ``H x W x 3`` uint8 numpy array.
        """
        rng = self._generator()
        img = as_rgb_uint8(img, self.size)
        if rng.random() < self.flip_p:
            img = cv2.flip(img, 1)
        return _finish(img, self.output)

    def __repr__(self):
        return (f"{type(self).__name__}(size={self.size}, flip_p={self.flip_p}, "
                f"seed={self._seed}, output={self.output!r})")


class MixedViewTransform(_WorkerAwareRandom):
    """Single view, H or L: ``img -> FloatTensor [3, size, size]``, for fair single-view baselines.

    With probability ``lq_p`` the image's one view is QGFace's L view (:func:`apply_degradation`, with its
    own flip), else its H view (flipped with probability ``flip_p``). With ``lq_p = 0.5`` a baseline sees the
    degradation distribution QGFace trains on (half its forwarded rows are L views), one view per image.

    Draws per call, from the same worker-aware generator as :class:`TwoViewTransform`: one uniform for the
    choice (L when ``< lq_p``), then what that view draws in :class:`TwoViewTransform` (the H view: one
    uniform for the flip; the L view: the degradation's draws). So with the same generator state after the
    choice, the H / L output is bitwise :class:`TwoViewTransform`'s H / L view of that state; in particular
    ``lq_p = 1`` with a seed gives, call for call, the L views of a :class:`TwoViewTransform` of that seed
    (whose first draw is its H flip).

    Args:
        lq_p: probability of the L view.
        others: as :class:`TwoViewTransform` (the L view's options, ``flip_p``, ``seed``, ``output``).
    """

    def __init__(self, *, lq_p=0.5, size=112, scale=(0.1, 0.5), jpeg_quality=75, crop_p=0.2,
                 crop_scale=(0.8, 1.0), jitter_p=0.2, jitter=0.2, rotation_p=0.2,
                 rotation_degrees=45.0, flip_p=0.5, seed=None, output="float"):
        self.lq_p = check_prob("lq_p", lq_p)
        self.output = _check_output(output)
        self._params = check_params(check_size(size), scale, jpeg_quality, crop_p, crop_scale,
                                     jitter_p, jitter, rotation_p, rotation_degrees, flip_p)
        self.size, self.flip_p = self._params[0], self._params[-1]
        super().__init__(seed)

    @property
    def seed(self):
        """The explicit seed given to the constructor, or None."""
        return self._seed

    def __call__(self, img):
        """One view of one image: ``[3, size, size]`` (the L view with probability ``lq_p``, else the H view)."""
        rng = self._generator()
        img = as_rgb_uint8(img, self.size)
        if rng.random() < self.lq_p:
            view = apply_degradation(img, rng, *self._params)
        elif rng.random() < self.flip_p:
            view = cv2.flip(img, 1)
        else:
            view = img
        return _finish(view, self.output)

    def __repr__(self):
        return (f"{type(self).__name__}(lq_p={self.lq_p}, size={self.size}, params={self._params[1:]}, "
                f"seed={self._seed}, output={self.output!r})")
