#!/usr/bin/env python
"""Benchmark IJB-C-sized pair scoring, and ONNX Runtime against torch for CPU feature extraction.

1. Scoring: ``pair_scores(method="matrix")`` vs the upstream-style ``"pairs"`` on synthetic data:
   ``--templates`` random L2-normalised float32 template features of dimension ``--dim`` and ``--pairs``
   random template-id pairs (default 23,000 x 512 and 15.6M pairs, the IJB-C 1:1 size). Times the matrix
   method (median of ``--repeats``) and the pairs method (once), checks the two agree, prints the times,
   the ratio and the peak RSS. Before that, template pooling at the same scale: ``--images`` random float32
   image features (default 469,375, IJB-C's count) in ``--templates`` templates of 1-5 medias, pooled by
   :func:`~qgface_plugin.eval.ijb.template_features` with upstream's default options (norm and detector
   score kept).
2. Extraction: arcface_torch's ``--extract-network`` (default r50), built by
   :func:`qgface_plugin.arcface.backbone.build_backbone` (``--arcface-root`` or ``ARCFACE_TORCH_ROOT``), exported
   with :func:`qgface_plugin.export.export_onnx` to a temporary folder, then timed with
   :class:`qgface_plugin.eval.features.FeatureExtractor` (``flip="none"``) on the torch module and on the
   .onnx file: the same ``--extract-batches`` batches of ``--extract-batch`` random uint8 112x112x3 images,
   one warm-up each, then ``--extract-repeats`` rounds alternating the two (the order swaps every round).
   Reports the median images/s of each, the median of the per-round ONNX/torch ratios and the largest
   feature difference. Weights: ``--model model.pt``, else seeded random ones whose BatchNorm statistics
   are set from one forward pass over random images (an untrained IResNet's raw outputs otherwise reach
   1e26, which makes the difference meaningless). Skipped, with one line saying how to enable it, when
   upstream is not found (or with ``--skip-extract``); the scoring part runs regardless.

Ends with one JSON line holding every figure (``"extract": null`` and ``"extract_skipped": reason`` when
skipped). ``--quick`` uses small sizes (for tests): 300 templates, D=64, 20k pairs, 3k images; r18 on 1 batch of 4.
"""
from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from qgface_plugin import cli
from qgface_plugin.eval.ijb import pair_scores, template_features

ENABLE_HINT = ("set ARCFACE_TORCH_ROOT (or pass --arcface-root) to insightface's recognition/arcface_torch, "
               "or run tools/fetch_arcface_torch.py")


def _peak_rss_mib() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0


# ------------------------------------------------------------------------------------------- scoring
def bench_pooling(args) -> dict:
    rng = np.random.default_rng(args.seed + 1)
    tmpl = rng.integers(0, args.templates, args.images) * 7 + 3
    media = tmpl * 10 + rng.integers(0, 5, args.images)
    x = rng.standard_normal((args.images, args.dim), dtype=np.float32)
    det = rng.uniform(0.5, 1.0, args.images).astype(np.float32)
    t0 = time.perf_counter()
    tids, _ = template_features(x, tmpl, media, use_norm=True, scores=det)
    t = time.perf_counter() - t0
    print(f"pooling: {args.images} images into {len(tids)} templates in {t:.3f} s")
    return {"images": args.images, "pool_s": round(t, 4)}


def bench_scoring(args) -> dict:
    pool = bench_pooling(args)
    rng = np.random.default_rng(args.seed)
    tids = np.sort(rng.choice(args.templates * 4, size=args.templates, replace=False)).astype(np.int64)
    F = rng.standard_normal((args.templates, args.dim), dtype=np.float32)
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    p1 = tids[rng.integers(0, args.templates, args.pairs)]
    p2 = tids[rng.integers(0, args.templates, args.pairs)]

    times = []
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        s_mat = pair_scores(tids, F, p1, p2, method="matrix")
        times.append(time.perf_counter() - t0)
    t_matrix = float(np.median(times))
    print(f"matrix: median {t_matrix:.3f} s over {len(times)} runs ({', '.join(f'{t:.3f}' for t in times)})")

    t_pairs = None
    max_diff = None
    if not args.skip_pairs:
        t0 = time.perf_counter()
        s_pairs = pair_scores(tids, F, p1, p2, method="pairs")
        t_pairs = time.perf_counter() - t0
        max_diff = float(np.max(np.abs(s_mat.astype(np.float64) - s_pairs)))
        print(f"pairs (upstream-style): {t_pairs:.3f} s; speed-up {t_pairs / t_matrix:.1f}x; "
              f"max |matrix - pairs| = {max_diff:.2e}")
    rss = _peak_rss_mib()
    print(f"peak RSS (pooling + scoring): {rss:.0f} MiB")
    return {"bench": "ijb_pair_scores", "templates": args.templates, "dim": args.dim, "pairs": args.pairs,
            "matrix_s": round(t_matrix, 4), "matrix_runs_s": [round(t, 4) for t in times],
            "pairs_s": None if t_pairs is None else round(t_pairs, 4),
            "speedup": None if t_pairs is None else round(t_pairs / t_matrix, 2),
            "max_abs_diff": max_diff, "peak_rss_mib": round(rss, 1), **pool}


# ---------------------------------------------------------------------------------------- extraction
def _backbone(args):
    """(model, weights description, upstream root); raises the upstream errors (folder missing or unusable)
    or QGFaceConfigError (a --model that cannot be read or does not fit)."""
    import torch

    from qgface_plugin.arcface import upstream
    from qgface_plugin.arcface.backbone import build_backbone, calibrate_batchnorm, load_backbone
    from qgface_plugin.arcface.checkout import find_root

    root = find_root(args.arcface_root)  # UpstreamNotFoundError (a QGFaceConfigError) when absent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ns = upstream.load(root)  # keeps torch's thread count (mxnet's import would set it to 1)
    args.torch_threads_after_upstream = torch.get_num_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if args.model:
            return load_backbone(args.extract_network, args.model, root=root), str(args.model), root
        torch.manual_seed(args.seed)
        model = build_backbone(ns, args.extract_network, args.embedding_size).float()
        gen = torch.Generator().manual_seed(args.seed + 1)
        model = calibrate_batchnorm(model, torch.rand(max(8, min(args.extract_batch, 32)), 3, 112, 112,
                                                      generator=gen) * 2 - 1)
    return model, f"random (seed {args.seed}, BatchNorm statistics from random images)", root


def bench_extract(args):
    """(figures dict, None) or (None, reason skipped)."""
    if args.skip_extract:
        return None, "--skip-extract"
    from qgface_plugin.arcface.checkout import UpstreamAPIError, UpstreamNotFoundError
    from qgface_plugin.arcface.upstream import UpstreamConflictError, UpstreamDependencyError
    try:
        importlib.import_module("onnx")  # torch.onnx.export needs it
        import onnxruntime as ort
        import torch
    except ImportError as exc:
        return None, f"{exc.name or exc} is not installed (pip install onnx onnxruntime torch)"
    try:
        model, weights, root = _backbone(args)
    except UpstreamNotFoundError:
        return None, f"arcface_torch not found; to enable: {ENABLE_HINT}"
    except (UpstreamAPIError, UpstreamConflictError, UpstreamDependencyError) as exc:
        first = str(exc).strip().splitlines()[0]
        return None, f"arcface_torch unusable ({first.rstrip(':. ')}); to enable: {ENABLE_HINT}"

    from qgface_plugin.eval.features import FeatureExtractor
    from qgface_plugin.export import export_onnx

    b, nb = args.extract_batch, args.extract_batches
    n = b * nb
    images = np.random.default_rng(args.seed).integers(0, 256, size=(n, 112, 112, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # upstream's torch.cuda.amp.autocast in forward()
        onnx_path = Path(tmp) / f"{args.extract_network}.onnx"
        fig = export_onnx(model, onnx_path, opset=args.opset, check=False)
        print(f"extract: {args.extract_network} ({weights}) exported to ONNX opset {fig['opset']} in "
              f"{fig['export_s']:.2f} s ({fig['size_bytes'] / 2**20:.1f} MiB)", flush=True)
        ext = {"torch": FeatureExtractor(model, batch_size=b, flip="none"),
               "onnx": FeatureExtractor(str(onnx_path), batch_size=b, flip="none")}
        ort_threads = ext["onnx"].session.get_session_options().intra_op_num_threads  # 0: ORT's default
        for name in ("torch", "onnx"):  # warm-up, one batch each
            ext[name](images[:b])
        runs = {"torch": [], "onnx": []}
        feats = {}
        for r in range(max(1, args.extract_repeats)):
            for name in (("torch", "onnx") if r % 2 == 0 else ("onnx", "torch")):
                t0 = time.perf_counter()
                feats[name] = ext[name](images)["features"]
                runs[name].append(n / (time.perf_counter() - t0))
    ratios = [o / t for o, t in zip(runs["onnx"], runs["torch"])]
    diff = float(np.max(np.abs(feats["onnx"].astype(np.float64) - feats["torch"])))
    scale = float(np.max(np.abs(feats["torch"])))
    res = {"network": args.extract_network, "batch": b, "batches": nb, "repeats": len(ratios),
           "weights": weights, "upstream_root_from": "--arcface-root" if args.arcface_root else
           ("ARCFACE_TORCH_ROOT" if os.environ.get("ARCFACE_TORCH_ROOT") else "third_party"),
           "embedding_size": int(feats["torch"].shape[1]), "opset": fig["opset"], "export_s": fig["export_s"],
           "torch_img_s": round(float(np.median(runs["torch"])), 2),
           "onnx_img_s": round(float(np.median(runs["onnx"])), 2),
           "onnx_over_torch": round(float(np.median(ratios)), 3),
           "torch_runs_img_s": [round(v, 2) for v in runs["torch"]],
           "onnx_runs_img_s": [round(v, 2) for v in runs["onnx"]],
           "max_abs_diff": diff, "max_rel_diff": diff / max(scale, 1e-30), "max_abs_feature": scale,
           "threads": {"torch": torch.get_num_threads(),
                       "torch_after_upstream_import": getattr(args, "torch_threads_after_upstream", None),
                       "onnxruntime": ort_threads if ort_threads > 0 else "default",
                       "cpu_count": os.cpu_count()},
           "onnxruntime": ort.__version__, "torch_version": torch.__version__}
    print(f"extract: torch {res['torch_img_s']:.1f} img/s, ONNX Runtime {res['onnx_img_s']:.1f} img/s "
          f"(medians of {len(ratios)} alternating rounds of {nb} x {b} images); ONNX/torch "
          f"{res['onnx_over_torch']:.2f}x (median of per-round ratios)")
    print(f"extract: max |onnx - torch| = {diff:.2e} (relative to max |feature| {scale:.3g}: "
          f"{res['max_rel_diff']:.2e}); threads: torch {res['threads']['torch']}, onnxruntime "
          f"{res['threads']['onnxruntime']} (FeatureExtractor takes no session options), "
          f"{os.cpu_count()} CPUs; torch after importing upstream: "
          f"{res['threads']['torch_after_upstream_import']}")
    return res, None


def main(argv=None) -> int:
    ap = cli.parser(__doc__.split("\n\n")[0], prog="bench_eval")
    ap.add_argument("--templates", type=int, default=23_000, help="template features scored")
    ap.add_argument("--dim", type=int, default=512, help="feature dimension D")
    ap.add_argument("--pairs", type=int, default=15_600_000, help="template pairs scored")
    ap.add_argument("--images", type=int, default=469_375, help="image features pooled into the templates")
    ap.add_argument("--repeats", type=int, default=3, help="timings of the matrix method (median reported)")
    ap.add_argument("--skip-pairs", action="store_true", help="do not time the slow upstream-style method")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random data and weights")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes (300 templates, D=64, 20k pairs, 3k images; extraction: r18, 1 batch of 4, 1 round)")
    g = ap.add_argument_group("feature extraction (ONNX Runtime vs torch, CPU)")
    g.add_argument("--skip-extract", action="store_true", help="do not run the extraction benchmark")
    g.add_argument("--extract-network", help="arcface_torch backbone (default r50; r18 with --quick)")
    g.add_argument("--extract-batch", type=int, help="images per forward pass (default 64; 4 with --quick)")
    g.add_argument("--extract-batches", type=int, help="batches per timing (default 3; 1 with --quick)")
    g.add_argument("--extract-repeats", type=int, help="alternating rounds (default 5; 1 with --quick)")
    g.add_argument("--model", help="model.pt / checkpoint for --extract-network (default: random weights)")
    g.add_argument("--embedding-size", type=int, default=512, help="D of random weights")
    g.add_argument("--opset", type=int, default=17, help="ONNX opset of the export")
    g.add_argument("--arcface-root", help="arcface_torch folder (default: ARCFACE_TORCH_ROOT or third_party)")
    args = ap.parse_args(argv)
    if args.quick:
        args.templates, args.dim, args.pairs, args.images = 300, 64, 20_000, 3_000
    for key, full, quick in (("extract_network", "r50", "r18"), ("extract_batch", 64, 4),
                             ("extract_batches", 3, 1), ("extract_repeats", 5, 1)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    for key in ("extract_batch", "extract_batches", "extract_repeats"):
        if getattr(args, key) < 1:
            ap.error(f"--{key.replace('_', '-')} must be >= 1")

    res = bench_scoring(args)
    from qgface_plugin.errors import QGFaceConfigError, QGFaceInputError
    try:
        extract, skipped = bench_extract(args)
    except (QGFaceConfigError, QGFaceInputError) as exc:  # e.g. a --model that does not fit --extract-network
        return cli.error(exc, "bench_eval")
    if skipped is not None:
        print(f"extract: skipped: {skipped}")
    res["extract"] = extract
    res["extract_skipped"] = skipped
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
