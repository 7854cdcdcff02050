"""What every evaluator's command line shares: model flags, the feature extractor, the report files."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .features import FLIP_MODES, FeatureExtractor, load_model

__all__ = ["evaluator_parser", "make_extractor", "write_report"]


def evaluator_parser(description: str, data_help: str) -> argparse.ArgumentParser:
    """A parser with ``--network --model --data --output`` and the extraction options."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--network", default=None, help="upstream backbone name (r18/r50/r100/mbf/...); for .pt models")
    p.add_argument("--model", required=True, help="model.pt (state dict / checkpoint) or .onnx file")
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--flip", choices=FLIP_MODES, default="sum", help="flip fusion of the features")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--arcface-root", default=None, help="arcface_torch folder (default: ARCFACE_TORCH_ROOT, ...)")
    p.add_argument("--workers", type=int, default=None, help="image decoding threads (default: cores, at most 8)")
    p.add_argument("--cache", default=None, help="folder for a resumable on-disk cache of image features")
    p.add_argument("--progress", action="store_true", help="progress bars on stderr")
    return p


def make_extractor(args):
    """``(FeatureExtractor, model info)`` from the parsed flags."""
    model, info = load_model(args.model, args.network, args.arcface_root)
    return FeatureExtractor(model, device=args.device, batch_size=args.batch_size, fp16=args.fp16,
                            flip=args.flip), info


def write_report(output, name: str, report: dict, markdown: str) -> None:
    """``<output>/<name>.json`` and ``<output>/<name>.md``; prints the Markdown."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(markdown, encoding="utf-8")
    print(markdown, end="")
