"""Evaluation of trained backbones: feature extraction (:mod:`.features`) and the insightface
``.bin`` 10-fold verification protocol with low-resolution variants (:mod:`.verification`)."""
from .features import FLIP_MODES, FeatureExtractor, preprocess
from .verification import evaluate, evaluate_bin, load_bin, lowres_variant

__all__ = ["FeatureExtractor", "FLIP_MODES", "preprocess", "load_bin", "lowres_variant", "evaluate",
           "evaluate_bin"]
