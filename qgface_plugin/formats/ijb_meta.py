"""The file names of an IJB-B / IJB-C release's ``meta/`` folder (insightface's IJB evaluators' layout).

Under ``<root>/meta/``, with ``t = target.lower()`` (``ijbc`` or ``ijbb``): ``<t>_face_tid_mid.txt``
(``image_name template_id media_id``), ``<t>_template_pair_label.txt`` (``tid1 tid2 label``) and
``<t>_name_5pts_score.txt`` (``image_name x1 y1 .. x5 y5 score``). One home: read by
:mod:`qgface_plugin.eval.ijb`, written by :mod:`qgface_plugin.synthetic.ijb`. Standard library only.
"""
from __future__ import annotations

import os

__all__ = ["TARGETS", "META_FILES", "meta_paths"]

#: the targets upstream's evaluators accept.
TARGETS = ("IJBC", "IJBB")
#: key -> file name pattern (``{t}`` = the lower-case target).
META_FILES = {"face_tid_mid": "{t}_face_tid_mid.txt", "template_pair_label": "{t}_template_pair_label.txt",
              "name_5pts_score": "{t}_name_5pts_score.txt"}


def meta_paths(root, target: str = "IJBC") -> dict:
    """The three meta files of the tree at ``root`` for ``target`` (any case; not checked against
    :data:`TARGETS`): ``{"face_tid_mid", "template_pair_label", "name_5pts_score"}`` -> path."""
    t = str(target).lower()
    meta = os.path.join(os.fspath(root), "meta")
    return {key: os.path.join(meta, name.format(t=t)) for key, name in META_FILES.items()}
