#!/usr/bin/env python
"""The main job, end to end on an embedded default: make a small mixed-quality face-like dataset,
train QGFace on it with arcface_torch's parts (GPU if present, else CPU), verify on held-out
identities (HQ–HQ and LQ–HQ pairs), and print the summary.

    python tools/demo.py --output work_dirs/demo            # ~10 minutes on a 2-core CPU
    python tools/demo.py --output work_dirs/demo --loss arcface   # the single-view baseline, same data

Everything lands in --output: data/ (train.rec/.idx, .bin sets, preview.png), train/ (model.pt,
checkpoints, tensorboard/, summary.json). arcface_torch comes from --arcface-root,
$ARCFACE_TORCH_ROOT or third_party/arcface_torch (tools/fetch_arcface_torch.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from qgface_plugin import upstream
from qgface_plugin.config import load_config
from qgface_plugin.errors import QGFaceConfigError, QGFaceInputError


def _make_data(out: Path, args) -> dict:
    from qgface_plugin.synthetic import make_dataset
    summary_path = out / "dataset.json"
    if summary_path.is_file():
        info = json.loads(summary_path.read_text())
        if (info.get("num_classes"), info.get("images_per_identity"), info.get("seed")) == \
                (args.identities, args.images_per_identity, args.seed):
            print(f"[demo] reusing the dataset in {out}", flush=True)
            return info
    print(f"[demo] writing {args.identities} identities x {args.images_per_identity} images "
          f"(30% low quality) to {out}", flush=True)
    info = make_dataset(out, num_identities=args.identities, images_per_identity=args.images_per_identity,
                        num_val_identities=args.val_identities, val_pairs=args.val_pairs, seed=args.seed)
    import cv2
    from qgface_plugin.synthetic import contact_sheet
    cv2.imwrite(str(out / "preview.png"), contact_sheet(out, rows=8, cols=12)[..., ::-1])
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="work_dirs/demo", help="folder for data, model, logs")
    parser.add_argument("--config", default="qgface_demo_cpu", help="training config (name or path)")
    parser.add_argument("--loss", choices=("qgface", "arcface", "cosface"), help="override config.loss")
    parser.add_argument("--identities", type=int, default=60)
    parser.add_argument("--images-per-identity", type=int, default=16)
    parser.add_argument("--val-identities", type=int, default=40)
    parser.add_argument("--val-pairs", type=int, default=400)
    parser.add_argument("--epochs", type=int, help="override config.num_epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arcface-root", help="arcface_torch folder")
    args = parser.parse_args(argv)

    t0 = time.time()
    out = Path(args.output)
    try:
        root = upstream.find_root(args.arcface_root)
    except QGFaceConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch
    device = "GPU (" + torch.cuda.get_device_name(0) + ")" if torch.cuda.is_available() else \
        f"CPU ({torch.get_num_threads()} threads)"
    print(f"[demo] arcface_torch: {root}\n[demo] device: {device}", flush=True)
    data = _make_data(out / "data", args)
    overrides = {"rec": str(out / "data"), "num_classes": data["num_classes"], "num_image": data["num_images"],
                 "output": str(out / "train")}
    if args.loss:
        overrides["loss"] = args.loss
    if args.epochs:
        overrides["num_epoch"] = args.epochs
    try:
        cfg = load_config(args.config, overrides)
        print(f"[demo] training {cfg.loss} ({cfg.network}, batch {cfg.batch_size}, {cfg.num_epoch} epochs)", flush=True)
        from qgface_plugin.training import train
        summary = train(cfg, str(root))
    except (QGFaceConfigError, QGFaceInputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wall = time.time() - t0
    ver = summary["verification"]
    lines = ["", f"QGFace demo finished in {wall / 60:.1f} min on {device}",
             f"  trained     {summary['steps']} steps, {summary['samples_per_s'] or 0:.1f} images/s, "
             f"final loss {summary['final'].get('loss', float('nan')):.3f}"]
    for name, r in ver.items():
        kind = {"synthetic_val_hq": "HQ-HQ pairs", "synthetic_val_lq": "LQ-HQ pairs"}.get(name, name)
        lines.append(f"  verification {kind:12s} {100 * r['accuracy']:.2f}% ± {100 * r['std']:.2f} "
                     f"(held-out identities; chance 50%)")
    lines += [f"  model       {summary['model']}",
              f"  logs        {Path(summary['output']) / 'tensorboard'}  (tensorboard --logdir ...)",
              f"  summary     {Path(summary['output']) / 'summary.json'}",
              f"  data        {out / 'data'}  (preview: {out / 'data' / 'preview.png'})"]
    print("\n".join(lines))
    (out / "demo_summary.json").write_text(json.dumps({**summary, "demo_wall_s": round(wall, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
