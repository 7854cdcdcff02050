"""tools/bench_core.py runs end to end (tiny sizes; no timing is asserted here)."""
import json
import subprocess
import sys

from _proc import ROOT


def test_bench_core_quick_prints_one_json_line_with_every_figure():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_core.py"), "--quick"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    head = result["heads"][0]
    for key in ("plain_s", "upstream_style_s", "qgface_b0.2_s", "ratio_b0.2", "qgface_b1_s", "ratio_b1",
                "contrast_fraction_b1"):
        assert head[key] > 0, key
    assert head["contrast_fraction_b1"] == 1.0
    for key in ("subnormal_share_plain", "subnormal_share_b0.2", "subnormal_share_b1"):
        assert 0.0 <= head[key] <= 1.0, key
    assert result["cpu"]
    for key in ("two_view_img_per_s_per_core", "flip_only_img_per_s_per_core", "jpeg_decode_img_per_s_per_core",
                "two_view_cost_ratio", "two_view_vs_decode_ratio"):
        assert result["transform"][key] > 0, key
    w = result["worker_pipeline"]
    for key in ("two_view_uint8_img_per_s_per_worker", "two_view_float_img_per_s_per_worker",
                "flip_only_uint8_img_per_s_per_worker", "flip_only_float_img_per_s_per_worker",
                "two_view_vs_flip_ratio", "uint8_vs_float_two_view_ratio"):
        assert w[key] > 0, key
