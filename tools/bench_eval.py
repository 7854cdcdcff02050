#!/usr/bin/env python
"""Benchmark IJB-C-sized 1:1 pair scoring: ``pair_scores(method="matrix")`` vs the upstream-style ``"pairs"``.

Synthetic data: ``--templates`` random L2-normalised float32 template features of dimension ``--dim`` and
``--pairs`` random template-id pairs (default 23,000 x 512 and 15.6M pairs, the IJB-C 1:1 size). Times the
matrix method (median of ``--repeats``) and the pairs method (once), checks the two agree, prints the times,
the ratio and the peak RSS, and ends with one JSON line. ``--quick`` uses small sizes (for tests).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from qgface_plugin.eval.ijb import pair_scores  # noqa: E402


def _peak_rss_mib() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--templates", type=int, default=23_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--pairs", type=int, default=15_600_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-pairs", action="store_true", help="do not time the slow upstream-style method")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="small sizes (300 templates, D=64, 20k pairs)")
    args = ap.parse_args(argv)
    if args.quick:
        args.templates, args.dim, args.pairs = 300, 64, 20_000

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
    print(f"peak RSS: {rss:.0f} MiB")
    res = {"bench": "ijb_pair_scores", "templates": args.templates, "dim": args.dim, "pairs": args.pairs,
           "matrix_s": round(t_matrix, 4), "matrix_runs_s": [round(t, 4) for t in times],
           "pairs_s": None if t_pairs is None else round(t_pairs, 4),
           "speedup": None if t_pairs is None else round(t_pairs / t_matrix, 2),
           "max_abs_diff": max_diff, "peak_rss_mib": round(rss, 1)}
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
