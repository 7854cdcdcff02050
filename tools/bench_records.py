#!/usr/bin/env python
"""Benchmark the mxnet-free record reader (qgface_plugin.formats.recordio) against mxnet's, side by side.

On one record set (``--rec DIR``, or a synthetic one written to a temporary folder: 112x112 JPEGs at
quality 95, as insightface's packs hold), in one process:

* open: reading ``train.idx`` (``RecordReader(root)`` vs ``mx.recordio.MXIndexedRecordIO``);
* raw reads, records/s: every image record's payload, in one random order
  (``reader.read(key)`` vs ``imgrec.read_idx(key)``);
* read + decode, images/s: what arcface_torch's ``MXFaceDataset.__getitem__`` does before its
  transform (``reader.read_image(key)`` vs ``mx.recordio.unpack(imgrec.read_idx(key))`` then
  ``mx.image.imdecode(img).asnumpy()`` and the label), on the same keys.

The readers alternate (mxnet, python, python, mxnet, ...) for ``--rounds`` rounds and medians are
reported: these machines are shared and noisy. The files are in the page cache after the first
round, so this measures the readers' CPU cost, not the disk. One process, one thread: a DataLoader
worker's view. The last line is one JSON object holding every figure.

    python tools/bench_records.py                 # 2000 images, 7 rounds (about a minute on 2 cores)
    python tools/bench_records.py --quick         # 300 images, 3 rounds
    python tools/bench_records.py --rec DIR       # an existing set (its first --images images)
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from qgface_plugin import cli
from qgface_plugin.errors import QGFaceInputError
from qgface_plugin.formats.recordio import RecordReader
from qgface_plugin.utils import cpu_model


def _make_set(folder: Path, images: int) -> Path:
    from qgface_plugin.synthetic import make_dataset
    per = 20
    make_dataset(folder, num_identities=max(1, -(-images // per)), images_per_identity=per, num_val_identities=2,
                 val_pairs=40, seed=0)
    return folder


def _timed(fn, keys) -> float:
    t0 = time.perf_counter()
    fn(keys)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = cli.parser(__doc__.split("\n\n")[0], raw_description=False)
    ap.add_argument("--rec", type=Path, help="a record set folder (train.rec + train.idx); default: a synthetic one "
                                             "written to a temporary folder")
    ap.add_argument("--images", type=int, default=2000, help="images read per round")
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds; medians are reported")
    ap.add_argument("--quick", action="store_true", help="300 images, 3 rounds")
    args = ap.parse_args(argv)
    if args.images < 1 or args.rounds < 1:
        return cli.error(f"--images {args.images} and --rounds {args.rounds} must be >= 1")
    if args.quick:
        args.images, args.rounds = 300, 3

    try:
        from qgface_plugin.utils import import_mxnet
        mx = import_mxnet()
        mx_error = None
    except Exception as exc:
        mx, mx_error = None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"

    tmp = None
    if args.rec is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_records_")
        t0 = time.perf_counter()
        root = _make_set(Path(tmp.name), args.images)
        print(f"wrote a synthetic set of {args.images} images in {time.perf_counter() - t0:.1f} s", flush=True)
    else:
        root = args.rec

    try:
        reader = RecordReader(root)
    except QGFaceInputError as exc:
        return cli.error(exc)
    keys = [int(k) for k in reader.imgidx[:args.images]]
    order = np.random.default_rng(0).permutation(len(keys))
    keys = [keys[i] for i in order]
    rec_bytes = sum(len(reader.read(k)) for k in keys)

    def py_open():
        RecordReader(root).close()

    def py_raw(ks, r=reader):
        for k in ks:
            r.read(k)

    def py_img(ks, r=reader):
        for k in ks:
            r.read_image(k)

    fns = {"python": (py_open, py_raw, py_img)}
    if mx is not None:
        imgrec = mx.recordio.MXIndexedRecordIO(str(Path(root) / "train.idx"), str(Path(root) / "train.rec"), "r")

        def mx_open():
            mx.recordio.MXIndexedRecordIO(str(Path(root) / "train.idx"), str(Path(root) / "train.rec"), "r").close()

        def mx_raw(ks, r=imgrec):
            for k in ks:
                r.read_idx(k)

        def mx_img(ks, r=imgrec):
            for k in ks:
                header, img = mx.recordio.unpack(r.read_idx(k))
                label = header.label
                if not isinstance(label, float):
                    label = label[0]
                mx.image.imdecode(img).asnumpy()

        fns["mxnet"] = (mx_open, mx_raw, mx_img)
        # same bytes and pixels before timing anything
        for k in keys[:20]:
            assert reader.read(k) == imgrec.read_idx(k)
            assert np.array_equal(reader.read_image(k)[0],
                                  mx.image.imdecode(mx.recordio.unpack(imgrec.read_idx(k))[1]).asnumpy())
    names = list(fns)
    times = {n: {"open": [], "raw": [], "img": []} for n in names}
    py_raw(keys)  # warm the page cache and both readers
    py_img(keys[:50])
    if mx is not None:
        fns["mxnet"][1](keys)
        fns["mxnet"][2](keys[:50])
    for rnd in range(args.rounds):
        seq = names if rnd % 2 == 0 else names[::-1]
        for name in seq:
            open_fn, raw_fn, img_fn = fns[name]
            t0 = time.perf_counter()
            open_fn()
            times[name]["open"].append(time.perf_counter() - t0)
            times[name]["raw"].append(_timed(raw_fn, keys))
            times[name]["img"].append(_timed(img_fn, keys))
    n = len(keys)
    result = {"bench": "records", "images": n, "rounds": args.rounds, "index_entries": len(reader),
              "mean_record_bytes": round(rec_bytes / n, 1), "cpu": cpu_model(),
              "synthetic": args.rec is None, "mxnet": mx.__version__ if mx is not None else None,
              "mxnet_error": mx_error}
    for name in names:
        med = {k: statistics.median(v) for k, v in times[name].items()}
        result[f"{name}_open_ms"] = round(med["open"] * 1e3, 3)
        result[f"{name}_records_per_s"] = round(n / med["raw"], 1)
        result[f"{name}_images_per_s"] = round(n / med["img"], 1)
        result[f"{name}_us_per_record"] = round(med["raw"] / n * 1e6, 2)
        result[f"{name}_us_per_image"] = round(med["img"] / n * 1e6, 2)
    if mx is not None:
        result["records_speedup"] = round(result["python_records_per_s"] / result["mxnet_records_per_s"], 3)
        result["images_speedup"] = round(result["python_images_per_s"] / result["mxnet_images_per_s"], 3)
        result["open_speedup"] = round(result["mxnet_open_ms"] / max(result["python_open_ms"], 1e-9), 3)
    print(f"record set: {n} images of {result['mean_record_bytes']:.0f} bytes on average; {args.rounds} rounds; "
          f"CPU {result['cpu']}")
    for name in names:
        print(f"  {name:>6}: open {result[f'{name}_open_ms']:.2f} ms, raw reads {result[f'{name}_records_per_s']:.0f} "
              f"records/s ({result[f'{name}_us_per_record']:.1f} us), read + decode "
              f"{result[f'{name}_images_per_s']:.0f} images/s ({result[f'{name}_us_per_image']:.1f} us)")
    if mx is not None:
        print(f"  python / mxnet: {result['records_speedup']:.2f}x records/s, {result['images_speedup']:.2f}x images/s")
    else:
        print(f"  mxnet not measured: {mx_error}")
    reader.close()
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(result), flush=True)
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
