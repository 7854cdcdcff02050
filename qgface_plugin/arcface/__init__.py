"""Everything that knows arcface_torch: locating and importing the pinned checkout, its compatibility fixes,
the Partial FC subclass, the training loop and the hooks for upstream's patched ``train_v2.py``.

Nothing outside this package imports arcface_torch; the QGFace core (the package top) imports nothing from
here. See ARCHITECTURE.md.
"""
