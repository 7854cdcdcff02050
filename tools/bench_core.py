#!/usr/bin/env python
"""Benchmark the QGFace core against plain baselines, measured side by side in one run.

1. Head: forward+backward time of the QGFace head (quality partition + AdaFace margin softmax with
   the logit gate + enqueue + proxy correction + contrastive loss) divided by that of a plain
   ArcFace margin-softmax head on the same embeddings (this package's fused margin), for
   C = K ∈ {8192, 65536}, B images (2B rows), D = 512. An arcface_torch-style head (in-place
   arccos of the whole logit matrix) is timed beside them for reference. Two QGFace settings: the
   default threshold (b = 0.2: few pairs contrasted, the usual case) and b = 1 (every pair
   contrasted: the worst case).
2. Transform: two-view images/s on one core against a flip-only single-view transform and against
   decoding the same image's JPEG (what each loader worker does first). CPUs of one kind differ
   about 2x in absolute speed: the ratios are the figures to compare; the CPU model is printed.
3. A loader worker's whole job (JPEG decode + transform + collate) in images/s per worker, two-view
   vs flip-only, with float32 batches (arcface_torch's) and uint8 batches (normalised on the device).

Beside each time: the share of subnormal floats in the inputs of the step's matrix products
(forward and backward), counted in one extra, untimed step. Many x86 CPUs compute on subnormals
10-100x slower, so a head that makes them is only fast where the CPU does not penalise them
(see qgface_plugin.numerics); the share says which case a timing is in.

Runs alternate (plain, arcface_torch-style, QGFace, plain, ...) with one QGFace head alive at a
time, and medians are reported, since these machines are noisy. Each ratio divides by the plain
head's median from the same alternation. The last line is one JSON object holding every figure.

    python tools/bench_core.py                # full run (a few minutes on 2 cores)
    python tools/bench_core.py --quick        # small sizes, for a smoke test
"""
from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from qgface_plugin import cli
from qgface_plugin.errors import QGFaceConfigError, QGFaceInputError
from qgface_plugin.utils import cpu_model


def _median_times(fns, repeats):
    """Run each fn alternately `repeats` times; returns the median seconds of each."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def _subnormal_share(fn):
    """Share of subnormal values among the matrix-product inputs of one call of ``fn``."""
    from qgface_plugin.numerics import count_matmul_subnormals

    with count_matmul_subnormals() as records:
        fn()
    total = sum(r["numel"] for r in records)
    return sum(r["subnormal"] for r in records) / total if total else 0.0


def bench_head(num_classes, batch, dim, repeats, thresholds):
    from qgface_plugin import MarginClassifier, QGFaceLoss, build_margin

    torch.manual_seed(0)
    rows = 2 * batch
    # embeddings with a spread of norms, as a backbone produces them
    base = torch.randn(rows, dim) * (1 + 0.3 * torch.randn(rows, 1)).abs()
    labels = torch.randint(0, num_classes, (batch,))
    labels2 = torch.cat([labels, labels])

    plain = MarginClassifier(build_margin("arcface"), dim, num_classes)

    def run_plain():
        z = base.clone().requires_grad_()
        plain(z, labels2).backward()

    def run_upstream_style():
        # arcface_torch's path, re-stated: logits clamped, then an in-place arccos/cos of the whole
        # matrix under no_grad (CombinedMarginLoss, ArcFace branch), then scale and cross-entropy
        z = base.clone().requires_grad_()
        logits = F.linear(F.normalize(z), F.normalize(plain.weight)).clamp(-1, 1)
        with torch.no_grad():
            target = logits[torch.arange(rows), labels2]
            logits.arccos_()
            logits[torch.arange(rows), labels2] = target.arccos() + 0.5
            logits.cos_()
        F.cross_entropy(logits * 64.0, labels2).backward()

    def make_head(b):
        clf = MarginClassifier(build_margin("adaface"), dim, num_classes)
        head = QGFaceLoss(clf, dim, queue_size=num_classes, threshold=b, stats_init="first_batch")
        with torch.no_grad():  # steady state: a full queue whose centres have drifted a little
            qlabels = torch.randint(0, num_classes, (num_classes,))
            head.queue.enqueue(torch.randn(num_classes, dim), qlabels,
                               clf.weight[qlabels] + 0.001 * torch.randn(num_classes, dim))
        return head

    out = {"C": num_classes, "K": num_classes, "B": batch, "rows": rows, "D": dim}
    plain_times, upstream_times = [], []
    # one QGFace head alive at a time (as in training), each timed alternately with the baselines
    for b in thresholds:
        head, last = make_head(b), {}

        def run_qgface():
            z = base.clone().requires_grad_()
            loss, stats = head(z, labels)
            loss.backward()
            last["stats"] = stats

        runners = [run_plain, run_upstream_style, run_qgface]
        for fn in runners:  # warm-up
            fn()
        key = f"b{b:g}"
        out[f"subnormal_share_{key}"] = _subnormal_share(run_qgface)
        if b == thresholds[0]:
            out["subnormal_share_plain"] = _subnormal_share(run_plain)
            out["subnormal_share_upstream_style"] = _subnormal_share(run_upstream_style)
        t_plain, t_up, t_qg = _median_times(runners, repeats)
        plain_times.append(t_plain)
        upstream_times.append(t_up)
        out[f"qgface_{key}_s"] = round(t_qg, 4)
        out[f"ratio_{key}"] = round(t_qg / t_plain, 3)
        out[f"ratio_{key}_vs_upstream_style"] = round(t_qg / t_up, 3)
        out[f"contrast_fraction_{key}"] = round(float(last["stats"]["contrast_fraction"]), 3)
        head = None  # free it before the next setting
    out["plain_s"] = round(statistics.median(plain_times), 4)
    out["upstream_style_s"] = round(statistics.median(upstream_times), 4)
    return out


def _face_like(n, seed=0):
    """Smooth, structured 112x112 RGB images (gradients, blobs, texture) as uint8 HWC arrays."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:112, 0:112].astype(np.float32) / 112
    imgs = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.4)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        chans = [blob * rng.uniform(80, 200) + xx * rng.uniform(0, 50) + rng.normal(0, 8, xx.shape) for _ in range(3)]
        imgs.append(np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8))
    return imgs


def bench_transform(num_images, repeats):
    import cv2

    from qgface_plugin.views import FlipTransform, TwoViewTransform

    cv2.setNumThreads(1)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    imgs = _face_like(64)
    # what the data loader does before the transform: decode the record's JPEG (insightface's
    # record sets store quality-95 JPEGs)
    jpegs = [cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 95])[1] for im in imgs]
    two, flip = TwoViewTransform(seed=0), FlipTransform(seed=0)

    def runner(t, items):
        def run():
            for i in range(num_images):
                t(items[i % len(items)])
        return run

    def decode(buf):
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)

    runners = [runner(two, imgs), runner(flip, imgs), runner(decode, jpegs)]
    for fn in runners:  # warm-up
        fn()
    t_two, t_flip, t_decode = _median_times(runners, repeats)
    torch.set_num_threads(prev_threads)
    return {"two_view_img_per_s_per_core": round(num_images / t_two, 1),
            "flip_only_img_per_s_per_core": round(num_images / t_flip, 1),
            "jpeg_decode_img_per_s_per_core": round(num_images / t_decode, 1),
            "two_view_cost_ratio": round(t_two / t_flip, 3),
            "two_view_vs_decode_ratio": round(t_two / t_decode, 3)}


def _pct(share):
    return f"{100 * share:.2g}%" if share else "0%"


def bench_worker_pipeline(num_images, repeats, batch=64):
    """One loader worker's whole job per image: JPEG decode + transform + collate into batches,
    two-view vs flip-only, float32 output (arcface_torch's) vs uint8 (normalised on the device)."""
    import cv2
    from torch.utils.data import default_collate

    from qgface_plugin.views import FlipTransform, TwoViewTransform

    cv2.setNumThreads(1)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    jpegs = [cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 95])[1] for im in _face_like(64)]
    arms = {f"{name}_{out}": cls(seed=0, output=out) for name, cls in (("two_view", TwoViewTransform),
            ("flip_only", FlipTransform)) for out in ("float", "uint8")}

    def runner(t):
        def run():
            items = []
            for i in range(num_images):
                img = cv2.cvtColor(cv2.imdecode(jpegs[i % len(jpegs)], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                items.append((t(img), i))
                if len(items) == batch:
                    default_collate(items)
                    items = []
        return run

    runners = [runner(t) for t in arms.values()]
    for fn in runners:
        fn()
    times = dict(zip(arms, _median_times(runners, repeats)))
    torch.set_num_threads(prev_threads)
    out = {f"{k}_img_per_s_per_worker": round(num_images / v, 1) for k, v in times.items()}
    out["two_view_vs_flip_ratio"] = round(times["two_view_uint8"] / times["flip_only_uint8"], 3)
    out["uint8_vs_float_two_view_ratio"] = round(times["two_view_uint8"] / times["two_view_float"], 3)
    out["batch"] = batch
    return out


def build_parser():
    parser = cli.parser(__doc__)
    parser.add_argument("--classes", type=int, nargs="+", default=[8192, 65536],
                        help="C = K values, one head comparison each")
    parser.add_argument("--batch", type=int, default=256, help="B, images per step (2 views each: 2B rows)")
    parser.add_argument("--dim", type=int, default=512, help="D, embedding size")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per head (median)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.2, 1.0],
                        help="QGFace thresholds b in [0, 1], one QGFace head each")
    parser.add_argument("--images", type=int, default=2000, help="images per transform timing")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for a smoke test (C=K=512, B=16, D=64, 2 repeats, 50 images)")
    return parser


def main(argv=None) -> int:
    """Exit 0 when every figure was measured, 2 for bad flags."""
    args = build_parser().parse_args(argv)
    if args.quick:
        args.classes, args.batch, args.dim, args.repeats, args.images = [512], 16, 64, 2, 50
    for flag, values in (("--classes", args.classes), ("--batch", [args.batch]), ("--dim", [args.dim]),
                         ("--repeats", [args.repeats]), ("--images", [args.images])):
        if min(values) < 1:
            return cli.error(f"{flag} must be >= 1, got {min(values)}")
    try:
        return _run(args)
    except (QGFaceConfigError, QGFaceInputError) as exc:  # e.g. a threshold outside [0, 1]
        return cli.error(exc)


def _run(args) -> int:
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_model(),
              "heads": []}
    print(f"QGFace head vs plain ArcFace head, forward+backward, B={args.batch} images "
          f"({2 * args.batch} rows), D={args.dim}, median of {args.repeats}, {torch.get_num_threads()} threads")
    for c in args.classes:
        r = bench_head(c, args.batch, args.dim, args.repeats, args.thresholds)
        result["heads"].append(r)
        parts = ", ".join(f"b={b:g}: {r[f'qgface_b{b:g}_s']:.3f} s = {r[f'ratio_b{b:g}']:.2f}x "
                          f"({100 * r[f'contrast_fraction_b{b:g}']:.0f}% pairs contrasted, "
                          f"{_pct(r[f'subnormal_share_b{b:g}'])} subnormal)" for b in args.thresholds)
        print(f"  C=K={c}: plain {r['plain_s']:.3f} s ({_pct(r['subnormal_share_plain'])} subnormal; "
              f"arcface_torch-style {r['upstream_style_s']:.3f} s); QGFace {parts}", flush=True)
    t = bench_transform(args.images, args.repeats)
    result["transform"] = t
    print(f"Two-view transform: {t['two_view_cost_ratio']:.2f}x the time of flip-only and "
          f"{t['two_view_vs_decode_ratio']:.2f}x that of decoding the image's JPEG; per core on "
          f"{result['cpu']}: two-view {t['two_view_img_per_s_per_core']:.0f} images/s, flip-only "
          f"{t['flip_only_img_per_s_per_core']:.0f}, JPEG decode {t['jpeg_decode_img_per_s_per_core']:.0f}")
    w = bench_worker_pipeline(args.images, args.repeats)
    result["worker_pipeline"] = w
    print(f"One loader worker (decode + transform + collate, batches of {w['batch']}): two-view "
          f"{w['two_view_uint8_img_per_s_per_worker']:.0f} images/s with uint8 batches "
          f"({w['two_view_float_img_per_s_per_worker']:.0f} with float32), flip-only "
          f"{w['flip_only_uint8_img_per_s_per_worker']:.0f} ({w['flip_only_float_img_per_s_per_worker']:.0f}); "
          f"two-view {w['two_view_vs_flip_ratio']:.2f}x the time of flip-only")
    print(json.dumps(result))
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
