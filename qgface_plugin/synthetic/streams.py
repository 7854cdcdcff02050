"""The keyed random streams of the synthetic data (part of its on-disk determinism contract).

Every identity and every image has a random stream of its own, keyed by ``(seed, purpose, index...)``
(:func:`keyed_rng`), so, for example, the first 100 identities of a 1,000-identity set are the 100
identities of a 100-identity set with the same seed, and the files are byte-identical for any number of
workers. The purposes (one home, so no two generators share one): 1..13 the training set and its ``.bin``
sets (:mod:`.training_set`), 31..36 IJB (:mod:`.ijb`, :mod:`.benchmarks`), 41..44 TinyFace
(:mod:`.tinyface`), 51..53 SCface (:mod:`.scface`); 61..62 the study's LQ–LQ pairs and probe set
(:mod:`qgface_plugin.study.data`). numpy only.
"""
import functools

import numpy as np

from .identity import draw_identity

__all__ = ["keyed_rng", "identity"]

# training set (make_dataset): identities, images, which images are degraded; held-out .bin identities, pairs, images
STREAM_TRAIN_ID, STREAM_TRAIN_IMG, STREAM_TRAIN_SPLIT = 1, 2, 3
STREAM_VAL_ID, STREAM_VAL_PAIRS, STREAM_VAL_IMG = 11, 12, 13
# IJB-B/C (make_ijb; make_benchmarks derives IJB-B's seed with STREAM_IJB_SEED)
STREAM_IJB_SUBJECT, STREAM_IJB_LAYOUT, STREAM_IJB_IMAGE, STREAM_IJB_GEOMETRY, STREAM_IJB_PAIRS = 31, 32, 33, 34, 35
STREAM_IJB_SEED = 36
# TinyFace
STREAM_TF_ID, STREAM_TF_DISTRACTOR, STREAM_TF_IMAGE, STREAM_TF_LAYOUT = 41, 42, 43, 44
# SCface
STREAM_SC_SUBJECT, STREAM_SC_IMAGE, STREAM_SC_CAMERA = 51, 52, 53


def keyed_rng(seed, *keys):
    """The random stream ``(seed, *keys)``: a ``np.random.Generator`` on ``SeedSequence([seed, *keys])``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *[int(k) for k in keys]]))


@functools.lru_cache(maxsize=4096)
def identity(seed, stream, index):
    """Identity ``index`` of purpose ``stream`` for ``seed`` (cached): ``draw_identity(keyed_rng(seed, stream, index))``."""
    return draw_identity(keyed_rng(seed, stream, index))
