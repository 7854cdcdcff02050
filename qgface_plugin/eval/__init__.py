"""Evaluation of trained backbones: the benchmark protocols, their reports, the suite and model comparison.

Modules (each imports only those above it in this list, and from outside ``eval/`` only the package's
shared basics, the core's ``views``, ``formats`` and ``export``):

- :mod:`.quality_view` -- items split into quantile bins of feature-norm quality, the rows every quality table shares.
- :mod:`.roc` -- TAR at FAR off an ROC (upstream ``eval_ijbc.py``'s rule) and the ``TAR@FAR=..`` keys.
- :mod:`.erc` -- error-versus-reject curves of the norm as a quality score, with the random baseline.
- :mod:`.cache` -- a resumable on-disk cache of extracted features.
- :mod:`.features` -- the feature extractor (torch / ONNX, flip fusion), image reading, L2-normalisation.
- :mod:`.align` -- 5-point similarity alignment to the ArcFace 112x112 template.
- :mod:`.verification` -- insightface ``.bin`` sets: 10-fold accuracy, low-resolution variants, quality bins.
- :mod:`.identification` -- closed-set ranking (cosine, pessimistic ties), CMC and rank-1 quality bins.
- :mod:`.tinyface` -- TinyFace closed-set identification (CMC rank-1/5/20).
- :mod:`.scface` -- SCface rank-1 identification per distance.
- :mod:`.ijb` -- IJB-B / IJB-C 1:1 verification: meta files, template pooling, pair scores, quality view.
- :mod:`.cli` -- what every evaluator tool's command line shares: flags, extractor, report files.
- :mod:`.suite` -- the evaluation suite as a library: find the benchmarks, run every tool, summarise.
- :mod:`.paired` -- paired bootstrap of figure differences (weighted ROC, sorted quality bins).
- :mod:`.compare` -- side-by-side comparison of models run through the suite.
"""
from .features import FLIP_MODES, FeatureExtractor, preprocess
from .verification import evaluate, evaluate_bin, load_bin, lowres_variant

__all__ = ["FeatureExtractor", "FLIP_MODES", "preprocess", "load_bin", "lowres_variant", "evaluate",
           "evaluate_bin"]
