"""A resumable on-disk cache of extracted features, for the large evaluation sets (IJB-C: 469k images).

Features are stored in shards of ``shard_size`` consecutive items (``shard_00000.npz`` = items
``[0, shard_size)``, ...) under ``<root>/<name>-<key digest>/``, with the key written beside them as
``key.json``. The key holds everything that determines the features -- the model weights' SHA-1, the flip
mode, fp16, and a digest of the item list (file names, sizes and modification times; landmarks and
alignment for IJB) -- so a cache is never reused for another model, protocol or data set: those get their
own folder. Each shard is written to a temporary file and renamed, so an interrupted run leaves only
whole shards; rerunning the same command computes the missing ones only. A shard that cannot be read
back (truncated, wrong shape) is recomputed with a warning.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import QGFaceInputError
from ..utils import atomic_write

__all__ = ["FeatureCache", "digest", "files_digest", "make_cache"]

FORMAT = 1


def digest(*parts) -> str:
    """SHA-1 hex digest of strings / bytes / numpy arrays, in order."""
    h = hashlib.sha1()
    for p in parts:
        if isinstance(p, np.ndarray):
            p = np.ascontiguousarray(p)
            h.update(f"{p.dtype}|{p.shape}|".encode())
            p = p.tobytes()
        elif not isinstance(p, bytes):
            p = str(p).encode()
        h.update(p)
        h.update(b"\0")
    return h.hexdigest()


def files_digest(paths) -> str:
    """Digest of a list of files: their paths, sizes and modification times (not their contents)."""
    h = hashlib.sha1()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()


class FeatureCache:
    """Shards of ``(features [n, D] float32, norms [n] float32)`` on disk; see the module docstring.

    Args:
        root: the cache folder (created if needed).
        name: a readable prefix of the sub-folder (e.g. ``"ijbc"``).
        key: a JSON-serialisable dict of everything that determines the features.
    """

    def __init__(self, root, name: str, key: dict):
        self.key = dict(key, format=FORMAT)
        text = json.dumps(self.key, sort_keys=True)
        self.dir = Path(root) / f"{name}-{digest(text)[:16]}"
        self._layout = None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise QGFaceInputError(f"{self.dir}: cannot create the feature cache folder ({e})") from e
        key_file = self.dir / "key.json"
        if not key_file.exists():
            key_text = json.dumps(self.key, indent=2, sort_keys=True) + "\n"
            atomic_write(key_file, lambda tmp: Path(tmp).write_text(key_text, encoding="utf-8"))

    def check_layout(self, n: int, shard_size: int) -> None:
        """Fix the item count and shard size; shards written with another layout are not reused."""
        layout = {"n": int(n), "shard_size": int(shard_size)}
        lf = self.dir / "layout.json"
        if lf.exists():
            try:
                old = json.loads(lf.read_text())
            except (OSError, ValueError):
                old = None
            if old != layout:
                for shard in self.dir.glob("shard_*.npz"):
                    shard.unlink()
        atomic_write(lf, lambda tmp: Path(tmp).write_text(json.dumps(layout), encoding="utf-8"))
        self._layout = layout

    def _path(self, k: int) -> Path:
        return self.dir / f"shard_{int(k):05d}.npz"

    def _expected_len(self, k: int) -> int:
        n, s = self._layout["n"], self._layout["shard_size"]
        return max(0, min(s, n - k * s))

    def get(self, k: int):
        """``(features, norms)`` of shard ``k``, or ``None`` when absent or unreadable."""
        path = self._path(k)
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                f, nrm = z["features"], z["norms"]
        except Exception as e:  # truncated/corrupt file: numpy/zipfile raise various types
            warnings.warn(f"{path}: unreadable cache shard, recomputing ({e})")
            return None
        if self._layout is not None and (len(f) != self._expected_len(k) or len(nrm) != len(f) or f.ndim != 2):
            warnings.warn(f"{path}: cache shard has {len(f)} rows, expected {self._expected_len(k)}; recomputing")
            return None
        return f, nrm

    def put(self, k: int, features, norms) -> None:
        f = np.asarray(features, dtype=np.float32)
        nrm = np.asarray(norms, dtype=np.float32)
        atomic_write(self._path(k), lambda tmp: np.savez(tmp, features=f, norms=nrm), suffix=".npz")


def make_cache(cache_dir, name: str, extractor, items: str):
    """The :class:`FeatureCache` of ``extractor`` (its ``cache_key()``) on the items digested as ``items``,
    or ``None`` when ``cache_dir`` is ``None``."""
    if cache_dir is None:
        return None
    return FeatureCache(cache_dir, name, dict(extractor.cache_key(), items=items))

