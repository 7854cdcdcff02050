"""The arcface_torch backbone, built and loaded in one place.

* :func:`build_backbone`: a fresh network from arcface_torch's ``backbones.get_model`` (the plugin's only call
  of it: our training loop, model loading and the benchmarks all come here).
* :func:`read_state_dict` / :func:`infer_embedding_size`: a backbone state dict from ``model.pt`` (a plain state
  dict, as ``train_v2`` saves it) or a ``checkpoint_gpu_*.pt`` (its ``state_dict_backbone``), and its D.
* :func:`load_backbone`: build ``network`` and load such a file into it (CPU, fp32, eval mode); on a mismatch
  :func:`guess_network` names the network of :data:`KNOWN_NETWORKS` the file fits, if any.
* :func:`calibrate_batchnorm`: BatchNorm statistics from one pass over given images, for random-weight
  backbones in checks and benchmarks.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..errors import QGFaceConfigError
from . import upstream

__all__ = ["KNOWN_NETWORKS", "build_backbone", "read_state_dict", "infer_embedding_size", "guess_network",
           "load_backbone", "calibrate_batchnorm"]

#: backbones of arcface_torch tried when guessing which network a state dict belongs to.
KNOWN_NETWORKS = ("r18", "r34", "r50", "r100", "r200", "mbf", "mbf_large", "vit_t", "vit_s", "vit_b")
_PREFIXES = ("module.", "_orig_mod.")


def read_state_dict(model_path) -> dict:
    """The backbone state dict in ``model_path`` (a plain state dict, or a training checkpoint with
    ``state_dict_backbone``), on CPU, with any ``module.``/``_orig_mod.`` prefix removed."""
    path = Path(model_path)
    if not path.is_file():
        raise QGFaceConfigError(f"model file {path} does not exist (expected arcface_torch's model.pt "
                                "or a checkpoint_gpu_*.pt)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, not a torch file at all
        raise QGFaceConfigError(f"cannot read {path} as a torch state dict: {type(exc).__name__}: {exc}. "
                                "Save the backbone with torch.save(model.state_dict(), path).") from exc
    if isinstance(obj, dict) and "state_dict_backbone" in obj:
        obj = obj["state_dict_backbone"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise QGFaceConfigError(f"{path} does not hold a backbone state dict (a dict of tensors, or a checkpoint "
                                "with 'state_dict_backbone')")
    state = {}
    for key, value in obj.items():
        for prefix in _PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        state[key] = value
    return state


def infer_embedding_size(state: dict):
    """Embedding size D from the backbone's last BatchNorm1d (``features.*`` in IResNet and MobileFaceNet,
    ``feature.*`` in ViT), or ``None`` when no such key exists."""
    found = None
    for key, value in state.items():
        if key.split(".")[0] in ("features", "feature") and key.endswith("running_mean") and value.dim() == 1:
            found = int(value.shape[0])
    return found


def build_backbone(ns, network: str, embedding_size: int = 512, fp16: bool = False) -> torch.nn.Module:
    """arcface_torch's ``get_model(network, dropout=0, fp16=fp16, num_features=embedding_size)``, freshly
    initialised; ``ns`` is :func:`qgface_plugin.arcface.upstream.load`'s namespace. The one place the plugin
    calls ``get_model`` (training, loading a model file, benchmarks). Raises upstream's ``ValueError`` for an
    unknown ``network``."""
    return ns.get_model(network, dropout=0.0, fp16=bool(fp16), num_features=int(embedding_size))


def _matches(model, state) -> bool:
    ref = model.state_dict()
    return set(ref) == set(state) and all(tuple(ref[k].shape) == tuple(state[k].shape) for k in ref)


def guess_network(ns, state: dict, embedding_size, exclude=()):
    """Name of the arcface_torch network whose state dict has exactly these keys and shapes, or ``None``.
    Candidates are built on the meta device, so nothing is allocated."""
    for name in KNOWN_NETWORKS:
        if name in exclude:
            continue
        try:
            with warnings.catch_warnings(), torch.device("meta"):
                warnings.simplefilter("ignore")
                model = build_backbone(ns, name, embedding_size)
        except Exception:  # a family this upstream lacks, or one that cannot build on meta
            continue
        if _matches(model, state):
            return name
    return None


def load_backbone(network, model_path, embedding_size=None, root=None) -> torch.nn.Module:
    """Build arcface_torch's ``network`` and load ``model_path`` into it (CPU, fp32, eval mode).

    Args:
        network: arcface_torch backbone name (``r50``, ``mbf``, ...).
        model_path: ``model.pt`` (a state dict) or ``checkpoint_gpu_*.pt`` (uses ``state_dict_backbone``).
        embedding_size: D; inferred from the state dict's last BatchNorm1d when ``None``.
        root: arcface_torch folder (default: :func:`qgface_plugin.arcface.checkout.find_root`).

    Raises:
        QGFaceConfigError: missing/unreadable file, unknown network, D not inferable, or keys/shapes that
            do not fit the network (the message lists some and names the network that fits, if any).
    """
    state = read_state_dict(model_path)
    inferred = infer_embedding_size(state)
    if embedding_size is None:
        if inferred is None:
            raise QGFaceConfigError(f"cannot infer the embedding size from {model_path} (no features.*/feature.* "
                                    "BatchNorm1d running_mean); pass embedding_size (--embedding-size)")
        embedding_size = inferred
    embedding_size = int(embedding_size)
    if embedding_size <= 0:
        raise QGFaceConfigError(f"embedding_size must be positive, got {embedding_size}")
    ns = upstream.load(root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_backbone(ns, network, embedding_size)
    except ValueError as exc:
        raise QGFaceConfigError(f"unknown network {network!r} for arcface_torch's get_model ({exc}); "
                                f"known names include {', '.join(KNOWN_NETWORKS)}") from exc
    ref = model.state_dict()
    missing = sorted(set(ref) - set(state))
    unexpected = sorted(set(state) - set(ref))
    wrong = sorted(k for k in set(ref) & set(state) if tuple(ref[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:4])})")
        guess = guess_network(ns, state, embedding_size, exclude=(network,))
        hint = (f"it looks like a {guess!r} model: use --network {guess}" if guess else
                "check --network and --embedding-size")
        raise QGFaceConfigError(f"{model_path} does not fit network {network!r} with embedding size "
                                f"{embedding_size}: {'; '.join(parts)}. Network mismatch? {hint}")
    model.load_state_dict(state, strict=True)
    return model.float().eval()


def calibrate_batchnorm(model: torch.nn.Module, images: torch.Tensor) -> torch.nn.Module:
    """Set every BatchNorm's running statistics from one forward pass over ``images`` (momentum ``None``:
    a plain average) and return the model in eval mode. For random-weight backbones in checks and
    benchmarks: an untrained IResNet's eval-mode outputs otherwise reach 1e8-1e26."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()
