"""Studies: arms x seeds trained by the real loop on one record set, evaluated on HQ–HQ, HQ–LQ and LQ–LQ pairs,
reported with intervals (``tools/study.py``). The top layer: it may import every other one.

* :mod:`.arms` -- the arms (shipped names, sets, config specs) and each run's config;
* :mod:`.data` -- the synthetic record set, its pair sets (LQ–LQ built here) and the norm's probe set;
* :mod:`.evaluate` -- verification of a trained arm, the norm's AUROC, the training loop's AUROC callback;
* :mod:`.diagnostics` -- QGFace's training diagnostics (rows classified, pairs contrasted, queue fill);
* :mod:`.stats` -- t intervals over seeds, AUROC, the paired two-stage bootstrap over seeds and pairs;
* :mod:`.runner` -- the profiles and the resumable run loop with progress and ETA;
* :mod:`.report` -- ``study.json``, ``study.md``, ``study.png``.
"""
