"""The synthetic mixed-quality training set in arcface_torch's layout, and reading it back.

:func:`make_dataset` writes the whole set: a header0 ``train.rec`` / ``train.idx`` / ``property`` of rendered
identities (:mod:`.faces`), a share of each identity's images degraded (:mod:`.degrade`), a per-image
quality list, three verification ``.bin`` sets of held-out identities and a ``dataset.json`` summary.
The writers :func:`write_train_rec` and :func:`write_verification_bin` encode images and hand them to the
formats' one home (:mod:`qgface_plugin.formats.records`, :mod:`qgface_plugin.formats.verification_bin`);
:func:`read_rec_images` / :func:`contact_sheet` read the images back (no mxnet) and draw a preview grid.

Everything is deterministic for a seed (the keyed streams of :mod:`.streams`); the files are byte-identical
for any number of workers. numpy + OpenCV; mxnet only if it imports (the record writer then uses it; the
mxnet-free writer writes the same bytes).
"""
import json
import math
import os
import time

import cv2
import numpy as np

from ..errors import QGFaceConfigError
from ..formats.recordio import RecordReader
from ..formats.records import write_header0_set
from ..formats.verification_bin import write_bin
from .checks import check_fraction, check_image, check_int
from .degrade import degrade_quality
from .faces import render_face
from .jpeg import encode_jpeg
from .streams import (STREAM_TRAIN_ID, STREAM_TRAIN_IMG, STREAM_TRAIN_SPLIT, STREAM_VAL_ID, STREAM_VAL_IMG,
                      STREAM_VAL_PAIRS, identity, keyed_rng)

__all__ = ["make_dataset", "write_train_rec", "write_verification_bin", "read_rec_images", "contact_sheet"]


def write_train_rec(out_dir, samples, num_classes=None, size=112):
    """Write an insightface "header0" ``train.rec`` / ``train.idx`` plus ``property``.

    Layout (:mod:`qgface_plugin.formats.records`; what MS1M / Glint packs use and arcface_torch's
    ``MXFaceDataset`` reads): record 0 has ``flag=2`` and label ``[N + 1, N + 1 + num_ids]``; records
    ``1..N`` are the images with scalar float labels; records ``N+1 .. N+num_ids`` hold, for each label in
    order, ``[first_key, end_key)`` of its images. ``property`` is ``num_classes,size,size``.

    Args:
        out_dir: folder (created if missing); existing files of these names are replaced.
        samples: iterable of ``(image, label)``; ``image`` is an RGB uint8 array
            (JPEG-encoded at quality 95) or already-encoded ``bytes``; labels are
            ints ``0..num_classes-1``, **grouped** (all images of a label contiguous).
        num_classes: defaults to ``max(label) + 1``.
        size: image side written to ``property``.

    Returns:
        ``(num_images, num_classes)``.
    """
    encoded = ((image if isinstance(image, (bytes, bytearray)) else encode_jpeg(check_image(image)), label)
               for image, label in samples)
    return write_header0_set(out_dir, encoded, num_classes=num_classes, size=size)


def write_verification_bin(path, images, issame):
    """Write an insightface verification ``.bin`` (:mod:`qgface_plugin.formats.verification_bin`): a pickle
    of ``(bins, issame_list)``, two encoded images per pair.

    Args:
        path: output file.
        images: sequence of ``2 * len(issame)`` RGB uint8 arrays or encoded bytes.
        issame: sequence of bools.
    """
    issame = [bool(v) for v in issame]
    if len(images) != 2 * len(issame):
        raise QGFaceConfigError(f"write_verification_bin: {len(images)} images for {len(issame)} pairs "
                                f"(need 2 per pair)")
    write_bin(path, [bytes(im) if isinstance(im, (bytes, bytearray)) else encode_jpeg(check_image(im))
                     for im in images], issame)


def _lq_level(rng):
    """Severity of a degraded image: sqrt(U(0, 1)), skewed to the hard end (mean 2/3,
    i.e. a typical downscale to ~21 px)."""
    return float(math.sqrt(rng.uniform(0.0, 1.0)))



def _train_identity_images(task):
    """Worker: every image of training identity ``c`` -> list of ``(jpeg_bytes, level)``."""
    seed, c, images_per_identity, n_lq, size = task
    idn = identity(seed, STREAM_TRAIN_ID, c)
    lq = set(keyed_rng(seed, STREAM_TRAIN_SPLIT, c).choice(images_per_identity, n_lq, replace=False).tolist())
    out = []
    for j in range(images_per_identity):
        r = keyed_rng(seed, STREAM_TRAIN_IMG, c, j)
        img = render_face(idn, r, size)
        level = -1.0
        if j in lq:
            level = _lq_level(r)
            img = degrade_quality(img, r, level)
        out.append((encode_jpeg(img), level))
    return out


def _val_pair_images(task):
    """Worker: one verification pair -> ``(jpeg_a, jpeg_b)``; ``a`` degraded for an LQ pair."""
    seed, p, a, b, lq, size = task
    ra, rb = keyed_rng(seed, STREAM_VAL_IMG, p, 0), keyed_rng(seed, STREAM_VAL_IMG, p, 1)
    img_a = render_face(identity(seed, STREAM_VAL_ID, a), ra, size)
    img_b = render_face(identity(seed, STREAM_VAL_ID, b), rb, size)
    if lq:
        img_a = degrade_quality(img_a, ra, _lq_level(ra))
    return encode_jpeg(img_a), encode_jpeg(img_b)


class _Mapper:
    """Ordered map, in this process or in a pool of worker processes (the output is the same).

    The workers start from a fork server (a fresh single-threaded process), not by forking the caller: a
    caller that has used OpenCV's or torch's thread pools (a test run, a training script) would hand a
    forked child their locked state, and the child's first ``cv2.GaussianBlur`` would wait forever.
    """

    def __init__(self, workers):
        self.pool = None
        if workers >= 1:
            import multiprocessing

            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            self.pool = multiprocessing.get_context(method).Pool(workers)

    def __call__(self, fn, tasks, chunksize=1):
        if self.pool is None:
            return map(fn, tasks)
        return self.pool.imap(fn, tasks, chunksize)

    def close(self, failed=False):
        if self.pool is not None:
            if failed:
                self.pool.terminate()
            else:
                self.pool.close()
            self.pool.join()
            self.pool = None


def make_dataset(out_dir, num_identities=100, images_per_identity=20, lq_fraction=0.3,
                 num_val_identities=40, val_pairs=600, seed=0, size=112, progress=None, workers=0):
    """Generate the synthetic mixed-quality data set in arcface_torch's layout.

    Files written to ``out_dir`` (created if missing; same-named files replaced):

    * ``train.rec`` / ``train.idx`` / ``property``: ``num_identities *
      images_per_identity`` images (see :func:`write_train_rec`), grouped by
      label ``0..num_identities-1``. In every identity, ``round(lq_fraction *
      images_per_identity)`` images (random positions) are degraded with
      :func:`degrade_quality` at a level ``sqrt(U(0, 1))`` (skewed to severe).
    * ``train_quality.txt``: one line per image, ``key label level``, where
      ``level`` is ``-1`` for a clean (HQ) image.
    * ``synthetic_val.bin``: ``val_pairs`` verification pairs of
      ``num_val_identities`` **held-out** identities (never in train). Pairs come
      in groups of four -- HQ-HQ same, HQ-HQ different, LQ-HQ same, LQ-HQ
      different (an LQ-HQ pair has its *first* image degraded) -- so same /
      different alternate and every fold of a 10-fold split is balanced.
    * ``synthetic_val_hq.bin`` / ``synthetic_val_lq.bin``: the HQ-HQ and the
      LQ-HQ halves of it (``val_pairs / 2`` pairs each, same / different
      alternating, byte-identical images).
    * ``dataset.json``: the summary returned, less its ``seconds`` entry (so the
      file, too, is the same for the same arguments).

    Args:
        out_dir: output folder.
        num_identities: training identities (>= 1).
        images_per_identity: images per training identity (>= 1).
        lq_fraction: fraction of degraded training images, in [0, 1].
        num_val_identities: held-out identities for the verification sets (>= 2).
        val_pairs: number of pairs in ``synthetic_val.bin``; a positive multiple of
            40, so that each of the three ``.bin`` files has a multiple of 20 pairs
            (10 folds, each with as many same as different pairs).
        seed: int seed; the output is byte-identical for the same arguments.
        size: image side (112 for arcface_torch).
        progress: optional callable ``(stage: str, done: int, total: int)``.
        workers: worker processes that render (started from a fork server, so a script that passes
            ``workers >= 1`` calls this under ``if __name__ == "__main__":``, as any multiprocessing code);
            0 = none, render in this process. The files are byte-identical for any number of workers.

    Returns:
        The summary dict also written to ``dataset.json``.

    Raises:
        ValueError (``QGFaceConfigError``): a bad argument; the message names it.
    """
    num_identities = check_int("num_identities", num_identities, 1)
    images_per_identity = check_int("images_per_identity", images_per_identity, 1)
    lq_fraction = check_fraction("lq_fraction", lq_fraction)
    num_val_identities = check_int("num_val_identities", num_val_identities, 2)
    val_pairs = check_int("val_pairs", val_pairs, 40)
    if val_pairs % 40:
        raise QGFaceConfigError(
            f"val_pairs={val_pairs} must be a multiple of 40: the HQ-HQ and LQ-HQ sets get half each, and "
            f"each set needs a multiple of 20 pairs for balanced 10-fold verification")
    seed = check_int("seed", seed, 0)
    size = check_int("size", size, 16)
    workers = check_int("workers", workers, 0)
    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    report = progress or (lambda stage, done, total: None)
    mapper = _Mapper(workers)
    try:
        # ---- training set
        n_lq = int(round(lq_fraction * images_per_identity))
        levels = []

        def train_samples():
            tasks = [(seed, c, images_per_identity, n_lq, size) for c in range(num_identities)]
            for c, images in enumerate(mapper(_train_identity_images, tasks)):
                for data, level in images:
                    levels.append((c, level))
                    yield data, c
                report("train", (c + 1) * images_per_identity, num_identities * images_per_identity)

        n_img, _ = write_train_rec(out_dir, train_samples(), num_classes=num_identities, size=size)
        with open(os.path.join(out_dir, "train_quality.txt"), "w") as f:
            f.write("# key label level (-1 = clean HQ image; else degrade_quality level in [0, 1])\n")
            f.writelines(f"{k} {c} {lv:.4f}\n" for k, (c, lv) in enumerate(levels, start=1))
        t_train = time.perf_counter() - t0

        # ---- verification sets (held-out identities): plan the pairs here, render in workers
        pr = keyed_rng(seed, STREAM_VAL_PAIRS)
        pos_cycle = pr.permutation(num_val_identities)
        tasks = []
        for g in range(val_pairs // 4):
            for lq in (False, True):
                a = int(pos_cycle[(2 * g + lq) % num_val_identities])
                tasks.append((seed, len(tasks), a, a, lq, size))
                a, b = (int(v) for v in pr.choice(num_val_identities, 2, replace=False))
                tasks.append((seed, len(tasks), a, b, lq, size))
        hq_imgs, hq_same, lq_imgs, lq_same, all_imgs, all_same = [], [], [], [], [], []
        for task, pair in zip(tasks, mapper(_val_pair_images, tasks, chunksize=8)):
            same, lq = task[2] == task[3], task[4]
            all_imgs += pair
            all_same.append(same)
            (lq_imgs if lq else hq_imgs).extend(pair)
            (lq_same if lq else hq_same).append(same)
            if len(all_same) % 100 == 0 or len(all_same) == val_pairs:
                report("val", len(all_same), val_pairs)
    except BaseException:
        mapper.close(failed=True)
        raise
    mapper.close()
    files = {"rec": "train.rec", "idx": "train.idx", "property": "property", "quality": "train_quality.txt",
             "val": "synthetic_val.bin", "val_hq": "synthetic_val_hq.bin", "val_lq": "synthetic_val_lq.bin",
             "summary": "dataset.json"}
    write_verification_bin(os.path.join(out_dir, files["val"]), all_imgs, all_same)
    write_verification_bin(os.path.join(out_dir, files["val_hq"]), hq_imgs, hq_same)
    write_verification_bin(os.path.join(out_dir, files["val_lq"]), lq_imgs, lq_same)

    summary = {
        "generator": "qgface_plugin.synthetic.training_set", "format_version": 1,
        "seed": seed, "size": size,
        "num_classes": num_identities, "images_per_identity": images_per_identity,
        "num_images": n_img, "lq_fraction": lq_fraction, "lq_images": n_lq * num_identities,
        "hq_images": n_img - n_lq * num_identities,
        "num_val_identities": num_val_identities, "val_pairs": val_pairs,
        "val_pairs_hq": len(hq_same), "val_pairs_lq": len(lq_same),
        "val_same_pairs": int(sum(all_same)),
        "rec_layout": "header0: record 0 label [N+1, N+1+num_classes]; images 1..N; identity records after",
        "val_sets": ["synthetic_val", "synthetic_val_hq", "synthetic_val_lq"],
        "files": files,
    }
    with open(os.path.join(out_dir, files["summary"]), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    summary["seconds"] = {"train": round(t_train, 3), "total": round(time.perf_counter() - t0, 3)}
    summary["workers"] = workers
    return summary


# --------------------------------------------------------------------------- #
# reading back, preview
# --------------------------------------------------------------------------- #
def read_rec_images(rec_dir, keys=None):
    """Read ``(key, label, rgb_image)`` from a header0 ``train.rec`` (the mxnet-free
    :class:`~qgface_plugin.formats.recordio.RecordReader`, decoded from JPEG to RGB as mxnet decodes).
    ``keys`` defaults to every image record."""
    with RecordReader(rec_dir) as rec:
        if keys is None:
            keys = rec.imgidx
        out = []
        for k in keys:
            img, label = rec.read_image(int(k))
            out.append((int(k), int(label), img))
        return out


def contact_sheet(rec_dir, rows=8, cols=10, pad=2):
    """A preview grid (RGB uint8) of a data set written by :func:`make_dataset`.

    Row ``r`` shows identity ``r``: its clean images first, then its degraded
    ones, which get a red frame. Rows are separated by ``pad`` px.
    """
    rows = check_int("rows", rows, 1)
    cols = check_int("cols", cols, 1)
    levels = {}
    qpath = os.path.join(rec_dir, "train_quality.txt")
    if os.path.exists(qpath):
        with open(qpath) as f:
            for line in f:
                if line.strip() and not line.startswith("#"):
                    k, c, lv = line.split()
                    levels[int(k)] = (int(c), float(lv))
    by_label = {}
    for k, (c, lv) in sorted(levels.items()):
        by_label.setdefault(c, []).append((lv >= 0, k))
    wanted = []
    for c in sorted(by_label)[:rows]:
        items = sorted(by_label[c])                 # HQ (False) first, then LQ
        hq = [k for is_lq, k in items if not is_lq]
        lq = [k for is_lq, k in items if is_lq]
        n_lq = min(len(lq), max(cols // 3, 1) if lq else 0)
        wanted.append(hq[:cols - n_lq] + lq[:n_lq])
    images = {k: img for k, _, img in read_rec_images(rec_dir, [k for row in wanted for k in row])}
    s = next(iter(images.values())).shape[0] if images else 112
    sheet = np.full((len(wanted) * (s + pad) + pad, cols * (s + pad) + pad, 3), 255, np.uint8)
    for r, row in enumerate(wanted):
        for c, k in enumerate(row):
            y, x = pad + r * (s + pad), pad + c * (s + pad)
            tile = images[k].copy()
            if levels.get(k, (0, -1.0))[1] >= 0:
                cv2.rectangle(tile, (0, 0), (s - 1, s - 1), (255, 0, 0), 2)
            sheet[y:y + s, x:x + s] = tile
    return sheet

