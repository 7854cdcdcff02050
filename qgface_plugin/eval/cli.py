"""What every evaluator's command line shares: model flags, the feature extractor, the report files."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .features import FLIP_MODES, FeatureExtractor, load_model

__all__ = ["SHARED_FLAGS", "evaluator_parser", "shared_argv", "make_extractor", "run_evaluation",
           "write_report"]


# the model and extraction flags every evaluator shares: (flag, add_argument keywords)
SHARED_FLAGS = (
    ("--network", dict(default=None, help="upstream backbone name (r18/r50/r100/mbf/...); for .pt models")),
    ("--model", dict(required=True, help="model.pt (state dict / checkpoint) or .onnx file")),
    ("--flip", dict(choices=FLIP_MODES, default="sum", help="flip fusion of the features")),
    ("--batch-size", dict(type=int, default=64)),
    ("--device", dict(default="cpu")),
    ("--fp16", dict(action="store_true")),
    ("--arcface-root", dict(default=None, help="arcface_torch folder (default: ARCFACE_TORCH_ROOT, ...)")),
    ("--workers", dict(type=int, default=None, help="image decoding threads (default: cores, at most 8)")),
    ("--cache", dict(default=None, help="folder for a resumable on-disk cache of image features")),
    ("--progress", dict(action="store_true", help="progress bars on stderr")),
)


def evaluator_parser(description: str, data_help: str, data_required: bool = True) -> argparse.ArgumentParser:
    """A parser with ``--network --model --data --output`` and the extraction options (:data:`SHARED_FLAGS`)."""
    p = argparse.ArgumentParser(description=description)
    for flag, kw in SHARED_FLAGS[:2]:
        p.add_argument(flag, **kw)
    p.add_argument("--data", required=data_required, help=data_help)
    p.add_argument("--output", required=True, help="output folder")
    for flag, kw in SHARED_FLAGS[2:]:
        p.add_argument(flag, **kw)
    return p


def shared_argv(args, exclude=()) -> list:
    """The :data:`SHARED_FLAGS` of parsed ``args`` as a command line (to pass them on to an evaluator)."""
    argv = []
    for flag, kw in SHARED_FLAGS:
        if flag in exclude:
            continue
        v = getattr(args, flag[2:].replace("-", "_"))
        if v is None or v is False:
            continue
        argv += [flag] if kw.get("action") == "store_true" else [flag, str(v)]
    return argv


def make_extractor(args):
    """``(FeatureExtractor, model info)`` from the parsed flags."""
    model, info = load_model(args.model, args.network, args.arcface_root)
    return FeatureExtractor(model, device=args.device, batch_size=args.batch_size, fp16=args.fp16,
                            flip=args.flip), info


def run_evaluation(args, evaluate, prepare=None):
    """Build the extractor from ``args`` and time ``evaluate(extractor)``.

    ``prepare()`` (optional) runs first, so input it checks fails before a model is loaded; its result is
    then passed on: ``evaluate(extractor, prepare())``. Returns
    ``(result, model info, seconds)``, or ``None`` after printing ``error: <message>`` on stderr for bad
    input or configuration (the tool then exits with status 2).
    """
    import sys
    import time

    from ..errors import QGFaceConfigError, QGFaceInputError
    try:
        extra = () if prepare is None else (prepare(),)
        extractor, info = make_extractor(args)
        t0 = time.time()
        result = evaluate(extractor, *extra)
        return result, info, round(time.time() - t0, 3)
    except (QGFaceInputError, QGFaceConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def write_report(output, name: str, report: dict, markdown: str) -> None:
    """``<output>/<name>.json`` and ``<output>/<name>.md``; prints the Markdown."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(markdown, encoding="utf-8")
    print(markdown, end="")
