"""qgface_plugin: QGFace (quality-guided joint training for mixed-quality face recognition,
arXiv 2312.17494) for insightface's arcface_torch.

The package top is the QGFace core -- quality partition, proxy queue, margins, classifier, contrastive term,
the loss, the two views and their degradation -- importing only torch and numpy (the image pipeline also
OpenCV and Pillow), and nothing of the layers around it: ``arcface/`` (arcface_torch integration: Partial FC,
training loop, train_v2 hooks), ``eval/`` (benchmarks), ``synthetic/`` (generated data), ``formats/``
(record files) and ``export.py`` (ONNX). See ARCHITECTURE.md.
"""
from .classifier import MarginClassifier
from .contrastive import masked_info_nce, pair_quality, pair_weight, rescale_factor
from .degradation import degrade
from .errors import QGFaceConfigError, QGFaceInputError, QGFaceNonFiniteError
from .loss import QGFaceLoss
from .margins import AdaFaceMargin, ArcFaceMargin, CosFaceMargin, QualityMargin, build_margin
from .quality import Quality, QualityPartition, threshold_schedule
from .queue import ProxyQueue, fetch_centres
from .views import FlipTransform, TwoViewTransform

__version__ = "0.1.0"

__all__ = [
    "QualityPartition", "Quality", "threshold_schedule",
    "ProxyQueue", "fetch_centres",
    "QualityMargin", "AdaFaceMargin", "ArcFaceMargin", "CosFaceMargin", "build_margin",
    "MarginClassifier", "QGFaceLoss",
    "masked_info_nce", "pair_weight", "pair_quality", "rescale_factor",
    "TwoViewTransform", "FlipTransform", "degrade",
    "QGFaceConfigError", "QGFaceInputError", "QGFaceNonFiniteError", "__version__",
]
