"""Our IJB-B/C evaluator (tools/eval_ijb.py) against upstream arcface_torch's eval_ijbc.py, run unmodified.

On one synthetic IJB-C tree (qgface_plugin.synthetic.benchmarks) and one seeded r18 ``model.pt``, upstream's script
(through tools/run_upstream.py, on CPU) and ours, with its defaults (upstream's protocol: flip sum, norm kept,
detector-score weighting), must give the same pair scores and the same TAR@FAR table at upstream's printed
precision; so must ours on the model exported to ONNX.

Skipped unless ``ARCFACE_TORCH_ROOT`` names an arcface_torch folder and ``pandas`` and ``prettytable``
(requirements-upstream-eval.txt) are installed. About two minutes on two CPU cores.
"""
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from _proc import ROOT, run_guarded, upstream_root

_MISSING = [m for m in ("pandas", "prettytable") if importlib.util.find_spec(m) is None]

pytestmark = [pytest.mark.upstream, pytest.mark.skipif(
    bool(_MISSING),
    reason="needs pandas + prettytable (pip install -r requirements-upstream-eval.txt)"
           + (f"; missing: {', '.join(_MISSING)}" if _MISSING else ""))]

#: the tree: 48 templates, 288 pairs (72 genuine); seed 1 gives 102 images, so upstream's batch of 8 leaves a
#: remainder batch of 6 (its ``rare_size`` path).
TREE = dict(target="IJBC", num_subjects=12, templates_per_subject=4, medias_per_template=(1, 2),
            images_per_media=(1, 2), seed=1, lq_fraction=0.3)
UPSTREAM_BATCH = 8
#: our JSON keys -> upstream's table columns (``str(10 ** -k)``)
COLUMNS = {f"TAR@FAR=1e-{k}": str(10 ** -k) for k in (6, 5, 4, 3, 2, 1)}
TIMEOUT = 600

# Seeded r18 (512-d, as upstream's 1024-column feature matrix needs). Its BatchNorm statistics are set from one
# batch of synthetic faces, so that the features have realistic norms (a fresh network's are ~1e8).
_MAKE_MODEL = r"""
import sys
import numpy as np
import torch
from qgface_plugin.arcface import upstream
from qgface_plugin.arcface.backbone import calibrate_batchnorm
from qgface_plugin.synthetic.ijb import aligned_face

out, seed = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
net = upstream.load().get_model("r18", dropout=0, fp16=False)
faces = np.stack([aligned_face(seed, s % 12, 100000 + s, None if s % 3 else 0.5) for s in range(48)])
x = torch.from_numpy(faces).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.5)
net = calibrate_batchnorm(net, x)
with torch.no_grad():
    norms = net(x[:8]).norm(dim=1)
print("feature norms", [round(float(v), 2) for v in norms])
torch.save(net.state_dict(), out)
"""


def _env():
    env = dict(os.environ, ARCFACE_TORCH_ROOT=str(upstream_root()), CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return env


def _run(args, what):
    res = run_guarded([sys.executable, *args], TIMEOUT, cwd=str(ROOT), env=_env())
    assert res.returncode == 0, f"{what} failed (exit {res.returncode}):\n{res.stdout[-6000:]}"
    return res.stdout


def parse_upstream_table(text: str, target: str = "IJBC") -> dict:
    """Upstream's printed PrettyTable -> {column header: cell} of the ``<t>-<TARGET>`` row."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("|")]
    header = next(ln for ln in lines if "Methods" in ln)
    row = next(ln for ln in lines if re.match(rf"\|\s*{target.lower()}-{target}\s*\|", ln))
    cells = lambda ln: [c.strip() for c in ln.strip("|").split("|")]  # noqa: E731
    return dict(zip(cells(header)[1:], cells(row)[1:]))


def _as_upstream_table(tar_at_far: dict) -> dict:
    return {col: f"{100 * tar_at_far[key]:.2f}" for key, col in COLUMNS.items()}


@pytest.fixture(scope="module")
def upstream_run(tmp_path_factory):
    from qgface_plugin.synthetic.ijb import make_ijb
    work = tmp_path_factory.mktemp("ijb_upstream")
    tree = work / "tree"
    info = make_ijb(tree, **TREE)
    assert info["num_images"] % UPSTREAM_BATCH, "the tree should exercise upstream's remainder batch"
    model = work / "model.pt"
    log = _run(["-c", _MAKE_MODEL, str(model), str(TREE["seed"])], "building the r18 model")
    result_dir = work / "upstream"
    out = _run([str(ROOT / "tools" / "run_upstream.py"), "eval_ijbc.py", "--model-prefix", str(model),
                "--image-path", str(tree), "--result-dir", str(result_dir), "--network", "r18",
                "--batch-size", str(UPSTREAM_BATCH), "--target", TREE["target"]], "upstream eval_ijbc.py")
    scores = np.load(result_dir / "insightface" / "ijbc.npy")
    assert scores.shape == (info["num_pairs"],)
    table = parse_upstream_table(out)
    assert list(table) == list(COLUMNS.values()), table
    return {"work": work, "tree": tree, "info": info, "model": model, "scores": scores, "table": table,
            "model_log": log, "log": out}


def _ours(run, model, name, extra=()):
    out = run["work"] / name
    _run([str(ROOT / "tools" / "eval_ijb.py"), "--model", str(model), "--data", str(run["tree"]),
          "--target", TREE["target"], "--output", str(out), "--arcface-root", str(upstream_root()), *extra],
         f"tools/eval_ijb.py on {Path(model).name}")
    report = json.loads((out / "ijbc.json").read_text())
    scores = np.load(out / "ijbc_scores.npy")
    return out, report, scores


def _check_same_as_upstream(run, out, report, scores, atol):
    assert scores.dtype == np.float32 and scores.shape == run["scores"].shape
    np.testing.assert_allclose(scores, run["scores"], rtol=0, atol=atol)
    assert _as_upstream_table(report["tar_at_far"]) == run["table"]
    assert (out / "ijbc.md").is_file() and (out / "ijbc_roc.png").stat().st_size > 0
    for col in run["table"].values():
        assert col in (out / "ijbc.md").read_text()


def test_pt_model_matches_upstream(upstream_run):
    out, report, scores = _ours(upstream_run, upstream_run["model"], "ours_pt", ["--network", "r18"])
    _check_same_as_upstream(upstream_run, out, report, scores, atol=1e-5)
    counts = report["counts"]
    info = upstream_run["info"]
    assert (counts["images"], counts["templates"], counts["pairs"], counts["genuine"]) == (
        info["num_images"], info["num_templates"], info["num_pairs"], info["num_genuine"])
    # a meaningful comparison: the seeded model separates the synthetic identities, scores are spread out
    assert report["auc"] > 0.75, (report["auc"], upstream_run["model_log"])
    assert np.ptp(upstream_run["scores"]) > 0.2


def test_onnx_model_matches_upstream(upstream_run):
    onnx_path = upstream_run["work"] / "m.onnx"
    _run([str(ROOT / "tools" / "export_onnx.py"), "--network", "r18", "--model", str(upstream_run["model"]),
          "--output", str(onnx_path), "--arcface-root", str(upstream_root())], "tools/export_onnx.py")
    out, report, scores = _ours(upstream_run, onnx_path, "ours_onnx")
    _check_same_as_upstream(upstream_run, out, report, scores, atol=1e-4)
