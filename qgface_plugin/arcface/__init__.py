"""Everything that knows arcface_torch; nothing outside this package imports it (ARCHITECTURE.md).

The checkout:

* :mod:`.checkout` -- where it is (``ARCFACE_TORCH_ROOT``, ``third_party/arcface_torch``) and the pin;
* :mod:`.fetch` -- extracting it at the pin from insightface's git history and applying ``patches/``;
* :mod:`.upstream` -- importing it into this process (``load``) and checking its API;
* :mod:`.compat` -- fixes for current numpy/SciPy/torch/tensorboard (each applied only when needed);
* :mod:`.cpu_shim` -- its hard-coded CUDA/NCCL calls made to run on a CPU.

Training on it (``tools/train.py``):

* :mod:`.config` -- configs by name or path, merged onto ``recognition_configs/base.py``, validated;
* :mod:`.factory` -- config keys -> QGFace components; :mod:`.backbone` -- ``get_model`` and ``model.pt``;
* :mod:`.partial_fc` -- QGFace's HQ classifier on upstream's ``PartialFC_V2``;
* :mod:`.training` -- the loop (``train_step``, ``train``), with :mod:`.launch` (process group, DDP),
  :mod:`.loader` (datasets), :mod:`.device_data` (host -> device), :mod:`.optim_step` (GradScaler rule),
  :mod:`.checkpoint`, :mod:`.resume` (which checkpoint to continue from, which to keep), :mod:`.validation` (``.bin`` checks), :mod:`.progress` and :mod:`.records`
  (record-folder checks);
* :mod:`.hooks` -- what upstream's own ``train_v2.py`` calls once ``patches/0002`` is applied.
"""
