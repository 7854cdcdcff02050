#!/usr/bin/env python
"""Generate the synthetic mixed-quality face-like data set (arcface_torch layout).

Writes train.rec / train.idx / property / train_quality.txt, three verification
sets of held-out identities (synthetic_val.bin, synthetic_val_hq.bin,
synthetic_val_lq.bin) and dataset.json into --output. Progress goes to stderr;
the final summary (paths, counts, seconds) to stdout as one JSON object.

    python tools/make_synthetic_data.py --output data/synthetic --preview data/synthetic/preview.png

Train with arcface_torch by pointing ``config.rec`` at the folder, ``config.num_classes``
at ``--identities``, ``config.num_image`` at identities x images, and
``config.val_targets`` at ``["synthetic_val", "synthetic_val_hq", "synthetic_val_lq"]``.
"""
import argparse
import json
import os
import sys
import time

from qgface_plugin import cli
from qgface_plugin.synthetic import contact_sheet, make_dataset


def _non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def build_parser():
    p = cli.parser(__doc__.split("\n\n")[0], raw_description=False)
    p.add_argument("--output", required=True, help="output folder (created if missing; files replaced)")
    p.add_argument("--identities", type=int, default=100, help="training identities")
    p.add_argument("--images-per-identity", type=int, default=20, help="images per training identity")
    p.add_argument("--lq-fraction", type=float, default=0.3, help="fraction of degraded training images")
    p.add_argument("--val-identities", type=int, default=40, help="held-out identities for the .bin sets")
    p.add_argument("--val-pairs", type=int, default=600,
                   help="pairs in synthetic_val.bin (a multiple of 40; half HQ-HQ, half LQ-HQ)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed -> same bytes)")
    p.add_argument("--workers", type=_non_negative_int, default=None,
                   help="rendering worker processes; 0 = none, render in this process; the output does not "
                        "depend on it (default: one per CPU)")
    p.add_argument("--preview", default=None, metavar="PNG",
                   help="also write a contact sheet: rows = identities, columns = images "
                        "(clean first, degraded ones framed in red; default: no preview)")
    p.add_argument("--preview-rows", type=int, default=12, help="identities in the preview")
    p.add_argument("--preview-cols", type=int, default=10, help="images per identity in the preview")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    workers = (os.cpu_count() or 1) if args.workers is None else args.workers
    t0 = time.perf_counter()
    last = {}

    def progress(stage, done, total):
        # at most ~20 lines per stage
        step = max(total // 20, 1)
        if done == total or done // step != last.get(stage, -1):
            last[stage] = done // step
            print(f"[make_synthetic_data] {stage}: {done}/{total} ({time.perf_counter() - t0:.1f}s)",
                  file=sys.stderr, flush=True)

    try:
        summary = make_dataset(args.output, num_identities=args.identities,
                               images_per_identity=args.images_per_identity, lq_fraction=args.lq_fraction,
                               num_val_identities=args.val_identities, val_pairs=args.val_pairs,
                               seed=args.seed, progress=progress, workers=workers)
    except ValueError as exc:
        return cli.error(exc, "make_synthetic_data")
    out = os.path.abspath(args.output)
    summary["paths"] = {key: os.path.join(out, name) for key, name in summary["files"].items()}
    if args.preview:
        import cv2

        sheet = contact_sheet(args.output, rows=args.preview_rows, cols=args.preview_cols)
        os.makedirs(os.path.dirname(os.path.abspath(args.preview)), exist_ok=True)
        if not cv2.imwrite(args.preview, sheet[..., ::-1]):
            return cli.error(f"could not write {args.preview!r}", "make_synthetic_data", cli.EXIT_FAILED)
        summary["paths"]["preview"] = os.path.abspath(args.preview)
    summary["seconds"]["wall"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
