"""Synthetic mixed-quality faces, for tests, the demo and studies (no real faces). numpy + OpenCV.

One idea per module, bottom up:

* :mod:`.checks` -- argument checks of the generators (``QGFaceConfigError`` naming the value);
* :mod:`.streams` -- the keyed random streams ``(seed, purpose, index...)`` and their purposes (determinism);
* :mod:`.identity` -- :func:`~.identity.draw_identity`: the fixed parameters of one cartoon person;
* :mod:`.drawing` -- the anti-aliased, sub-pixel drawing primitives in the 112x112 face frame;
* :mod:`.faces` -- :func:`~.faces.render_face`: one image of an identity with per-image nuisance;
* :mod:`.degrade` -- :func:`~.degrade.degrade_quality`: a low-quality copy (light, colour, scale, blur, noise, JPEG);
* :mod:`.jpeg` -- JPEG coding in RGB order;
* :mod:`.training_set` -- :func:`make_dataset`: the training ``.rec`` set, its ``.bin`` sets of held-out identities,
  and reading it back (:func:`contact_sheet`);
* :mod:`.ijb`, :mod:`.tinyface`, :mod:`.scface` -- the benchmark layouts the evaluators read;
* :mod:`.benchmarks` -- :func:`make_benchmarks`: all of them under one root, as ``tools/eval_suite.py`` finds them.

The on-disk formats (``.rec`` header0 layout, ``.bin`` pickle, the ArcFace template, IJB meta file names) live
in :mod:`qgface_plugin.formats`.
"""
from .benchmarks import make_benchmarks
from .training_set import contact_sheet, make_dataset

__all__ = ["make_dataset", "contact_sheet", "make_benchmarks"]
