#!/usr/bin/env python
"""Export a trained arcface_torch/QGFace backbone to ONNX for the pip ``insightface`` package.

    python tools/export_onnx.py --network r50 --model work_dirs/run/model.pt --output model.onnx

The ONNX model takes ``input`` [N,3,112,112] (RGB in [-1, 1]; insightface's ``get_feat`` does the BGR->RGB
swap and (x - 127.5) / 127.5 itself) and returns the raw, un-normalised ``embedding`` [N,D], so its norm
stays usable as a quality score. Unless --no-check, the file is checked with onnx.checker, compared with
torch in ONNX Runtime at batch 1 and 8, and loaded through ``insightface.model_zoo.get_model``. The figures
are printed, then one JSON line. Exit status 2 on a configuration or input error.
"""
import json
import sys
import time

from qgface_plugin import cli
from qgface_plugin.errors import QGFaceConfigError, QGFaceInputError


def main(argv=None) -> int:
    parser = cli.parser(__doc__, prog="export_onnx")
    parser.add_argument("--network", required=True, help="arcface_torch backbone name (r50, mbf, ...)")
    parser.add_argument("--model", required=True, help="model.pt (state dict) or checkpoint_gpu_*.pt")
    parser.add_argument("--output", required=True, help="ONNX file to write (*.onnx)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset")
    parser.add_argument("--embedding-size", type=int, help="D (default: inferred from the state dict)")
    parser.add_argument("--arcface-root", help="arcface_torch folder (default: ARCFACE_TORCH_ROOT or third_party)")
    parser.add_argument("--no-check", action="store_true", help="skip onnx.checker, ONNX Runtime and insightface checks")
    args = parser.parse_args(argv)

    from qgface_plugin.arcface.backbone import load_backbone
    from qgface_plugin.export import check_insightface, export_onnx

    t0 = time.time()
    try:
        model = load_backbone(args.network, args.model, args.embedding_size, root=args.arcface_root)
        fig = export_onnx(model, args.output, opset=args.opset, check=not args.no_check)
        print(f"exported {args.network} (D={fig['embedding_size']}) to {fig['path']}: opset {fig['opset']}, "
              f"{fig['size_bytes'] / 2**20:.1f} MiB, {fig['export_s']:.2f} s", flush=True)
        if not args.no_check:
            print("onnx.checker: OK")
            print(f"ONNX Runtime vs torch: max abs diff {fig['max_abs_diff_b1']:.3g} at batch 1 "
                  f"(rel {fig['max_rel_diff_b1']:.3g}), {fig['max_abs_diff_b8']:.3g} at batch 8 "
                  f"(rel {fig['max_rel_diff_b8']:.3g})")
            info = check_insightface(args.output, model)
            print(f"insightface: {info['model_class']} ({info['taskname']}), input {info['input_size']}, "
                  f"mean/std {info['input_mean']}/{info['input_std']}; get_feat vs torch max abs diff "
                  f"{info['max_abs_diff']:.3g} (rel {info['max_rel_diff']:.3g}) on {info['feat_shape'][0]} images")
            fig["insightface"] = info
    except (QGFaceConfigError, QGFaceInputError) as exc:
        return cli.error(exc, "export_onnx")
    fig["network"] = args.network
    fig["wall_s"] = round(time.time() - t0, 3)
    print(json.dumps(fig, default=list), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
