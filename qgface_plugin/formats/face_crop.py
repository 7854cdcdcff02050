"""The aligned face crop arcface_torch models read: 112x112 RGB, five landmarks on the ArcFace template.

:data:`ARCFACE_TEMPLATE` is built exactly as upstream's ``eval_ijbc.py`` builds it (the 96x112 template in
float32 with ``x + 8``), so crops aligned to it are bit-identical to upstream's. One home: the alignment of
:mod:`qgface_plugin.eval.align` maps landmarks onto it; the synthetic faces
(:mod:`qgface_plugin.synthetic.identity`) are drawn around it and the synthetic IJB tree
(:mod:`qgface_plugin.synthetic.ijb`) writes the landmarks of its loose crops through it. numpy only.
"""
from __future__ import annotations

import numpy as np

__all__ = ["CROP_SIZE", "ARCFACE_TEMPLATE"]

#: side of the aligned crop, pixels.
CROP_SIZE = 112


def _template() -> np.ndarray:
    src = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655],
                    [62.7299, 92.2041]], dtype=np.float32)
    src[:, 0] += 8.0  # as upstream: the 96x112 template shifted to 112x112, in float32
    src.flags.writeable = False
    return src


#: ``[5, 2]`` float32 (x, y) in the 112x112 crop: left eye, right eye, nose tip, left and right mouth corners.
ARCFACE_TEMPLATE = _template()
