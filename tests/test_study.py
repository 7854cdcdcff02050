"""Tests for qgface_plugin.study without arcface_torch: the statistics (against hand-worked cases), arm parsing
and each run's config, the resume of an interrupted study (a fake trainer and evaluator), the report files, the
AUROC callback, and tools/study.py's bad-input exits. The real --quick study is in test_study_run.py."""
import json
import math

import numpy as np
import pytest
import torch

from qgface_plugin.errors import QGFaceConfigError
from qgface_plugin.eval.paired import all_resamples
from qgface_plugin.study import arms as arms_mod
from qgface_plugin.study import report
from qgface_plugin.study.data import PAIR_TYPES
from qgface_plugin.study.evaluate import AurocLogger
from qgface_plugin.study.runner import PROFILES, RESULT_FILE, run_dir, run_study
from qgface_plugin.study.stats import auroc, seed_pair_bootstrap, t_interval


# ------------------------------------------------------------------------------------------------ statistics
def test_t_interval_hand_worked():
    got = t_interval([0.8, 0.9])
    # mean 0.85, sd = 0.1 / sqrt(2), t_{0.975, 1} = 12.7062047; half-width = 12.7062047 * sd / sqrt(2) = 0.635310
    assert got["mean"] == pytest.approx(0.85) and got["sd"] == pytest.approx(0.1 / math.sqrt(2))
    assert got["low"] == pytest.approx(0.85 - 0.6353102, abs=1e-6)
    assert got["high"] == pytest.approx(0.85 + 0.6353102, abs=1e-6)
    one = t_interval([0.7, None])
    assert one["mean"] == 0.7 and one["low"] is None and one["n"] == 1
    assert t_interval([])["mean"] is None


def test_auroc_hand_worked_with_ties():
    # pairs (pos, neg): (3,1) 1, (3,2) 1, (2,1) 1, (2,2) 1/2 -> 3.5 / 4
    assert auroc([3, 2], [1, 2]) == pytest.approx(0.875)
    assert auroc([1, 1], [1]) == pytest.approx(0.5)
    assert auroc([0.0], [1.0]) == 0.0 and auroc([], [1.0]) is None


def test_seed_pair_bootstrap_against_a_hand_worked_enumeration():
    # 2 seeds x 2 pairs. B is always right; A is right on both pairs at seed 1, on pair 0 only at seed 0.
    a = np.array([[1, 0], [1, 1]])
    b = np.array([[1, 1], [1, 1]])
    # Every equally likely draw: pair counts (c0, c1) and seed counts (s0, s1), each in {(2,0),(1,1),(1,1),(0,2)}.
    # A = (s0 * c0/2 + s1 * 1) / 2, so B - A = (s0/2) * (1 - c0/2): over the 16 draws
    # s0/2 = 1: {0, .5, .5, 1}; s0/2 = .5 (twice): {0, .25, .25, .5}; s0/2 = 0: {0, 0, 0, 0}
    # sorted: seven 0, four .25, four .5, one 1. Percentiles (linear, positions 0.025 * 15 and 0.975 * 15):
    # low = v[0.375] = 0, high = v[14.625] = 0.5 + 0.625 * (1 - 0.5) = 0.8125.
    # On the original draw (all counts 1): A = (1/2 + 1) / 2 = 0.75, B - A = 0.25.
    counts = [np.concatenate([cp, cs]) for cp in all_resamples(2) for cs in all_resamples(2)]
    got = seed_pair_bootstrap(a, b, counts=counts)
    assert got["a"] == pytest.approx(0.75) and got["b"] == 1.0 and got["diff"] == pytest.approx(0.25)
    assert got["low"] == pytest.approx(0.0) and got["high"] == pytest.approx(0.8125)
    assert got["resamples"] == 16 and got["seeds"] == 2 and got["pairs"] == 2
    # seeded draws: reproducible, inside the exhaustive range, and none at all with 0 resamples
    r1, r2 = seed_pair_bootstrap(a, b, 200, seed=1), seed_pair_bootstrap(a, b, 200, seed=1)
    assert r1 == r2 and 0.0 <= r1["low"] <= r1["high"] <= 1.0
    assert seed_pair_bootstrap(a, b, 0)["low"] is None
    with pytest.raises(Exception, match="seeds, pairs"):
        seed_pair_bootstrap(a, b[:, :1])


# ------------------------------------------------------------------------------------------------------ arms
def test_parse_arms_names_sets_and_specs():
    arms = arms_mod.parse_arms(["qgface,arcface", "mine:qgface_demo_cpu+qgface_lambda=0+margin_list=(1.0,0.5,0.0)"])
    assert [a.name for a in arms] == ["qgface", "arcface", "mine"]
    assert arms[2].config == "qgface_demo_cpu"
    assert arms[2].overrides == {"qgface_lambda": 0, "margin_list": (1.0, 0.5, 0.0)}
    spec = arms_mod.parse_arms("qgface_demo_cpu+qgface_threshold=0")[0]
    assert spec.name == "qgface_demo_cpu+qgface_threshold=0" and spec.overrides == {"qgface_threshold": 0}
    assert [a.name for a in arms_mod.parse_arms("paper")] == arms_mod.ARM_SETS["paper"]
    with pytest.raises(QGFaceConfigError, match="named twice"):
        arms_mod.parse_arms("qgface,qgface")
    with pytest.raises(QGFaceConfigError, match="not found"):
        arms_mod.parse_arms("no_such_config+lr=1")


STUDY_KEYS = {"rec": "nowhere", "num_classes": 10, "num_image": 64, "num_epoch": 2, "seed": 5, "output": "out",
              "val_targets": []}


def _cfg(name, match_rows=True):
    arm = arms_mod.parse_arms(name)[0]
    return arms_mod.study_config(arm, "qgface_demo_cpu", {"batch_size": 8}, STUDY_KEYS, match_rows)


def test_study_config_fair_baselines_and_ablations():
    q, ada, arc, flip = _cfg("qgface"), _cfg("adaface"), _cfg("arcface"), _cfg("arcface_flip")
    assert (q.loss, q.batch_size, q.num_epoch, q.seed, q.rec) == ("qgface", 8, 2, 5, "nowhere")
    assert (ada.qgface_lambda, ada.qgface_threshold) == (0.0, 0.0)
    # single-view arms: 2B images (= QGFace's 2B forwarded rows) per step, for twice the epochs = the same steps
    assert (arc.loss, arc.view_mode, arc.view_lq_p, arc.batch_size, arc.num_epoch) == ("arcface", "mixed", 0.5, 16, 4)
    assert (flip.view_mode, flip.batch_size) == ("flip", 16)
    assert _cfg("arcface", match_rows=False).batch_size == 8
    assert _cfg("qgface_inbatch").qgface_queue_size == 16
    assert _cfg("qgface_noproxy").qgface_proxy_correction is False
    assert [_cfg(f"qgface_b{b}").qgface_threshold for b in (0.1, 0.2, 0.3)] == [0.1, 0.2, 0.3]
    assert "L with p = 0.5" in arms_mod.views_of(arc) and "flipped H only" in arms_mod.views_of(flip)
    assert "two views" in arms_mod.views_of(q)


def test_view_mode_is_validated():
    from qgface_plugin.arcface.config import load_config, validate_config
    with pytest.raises(QGFaceConfigError, match="view_mode"):
        load_config("qgface_demo_cpu", {"view_mode": "both"})
    with pytest.raises(QGFaceConfigError, match="view_lq_p"):
        load_config("qgface_demo_cpu", {"view_lq_p": 1.5})
    cfg = load_config("qgface_demo_cpu", {"loss": "arcface", "view_mode": "mixed"})
    with pytest.raises(QGFaceConfigError, match="train_v2.py only flips"):
        validate_config(cfg, own_loop=False)


def test_loader_picks_the_mixed_transform_for_view_mode_mixed():
    from qgface_plugin.arcface.config import load_config
    from qgface_plugin.arcface.loader import build_loader
    from qgface_plugin.views import FlipTransform, MixedViewTransform, TwoViewTransform
    base = {"rec": "synthetic", "num_classes": 4, "num_image": 16, "batch_size": 4, "num_workers": 0}
    kinds = {}
    for mode in ("mixed", "flip"):
        cfg = load_config("qgface_demo_cpu", {**base, "loss": "arcface", "view_mode": mode, "view_lq_p": 0.25})
        kinds[mode] = build_loader(cfg, None, 0, 1, torch.device("cpu")).dataset.transform
    assert isinstance(kinds["mixed"], MixedViewTransform) and kinds["mixed"].lq_p == 0.25
    assert isinstance(kinds["flip"], FlipTransform)
    q = build_loader(load_config("qgface_demo_cpu", base), None, 0, 1, torch.device("cpu")).dataset.transform
    assert isinstance(q, TwoViewTransform)
    images, _ = next(iter(build_loader(load_config("qgface_demo_cpu", {**base, "loss": "arcface",
                                                                       "view_mode": "mixed"}),
                                       None, 0, 1, torch.device("cpu"))))
    assert images.shape == (4, 3, 112, 112)


# ------------------------------------------------------------------------------------- runner: resume, report
P = {"HQ–HQ": 20, "HQ–LQ": 20, "LQ–LQ": 20}
DATA = {"rec": "nowhere", "num_classes": 10, "num_image": 64, "pairs": {t: f"{t}.bin" for t in PAIR_TYPES}}


def _fake_evaluator(cfg, summary):
    rng = np.random.default_rng(cfg.seed * 7 + len(cfg.loss))
    pairs = {}
    for t, n in P.items():
        p_ok = 0.9 if cfg.loss == "qgface" else 0.7
        correct = (rng.random(n) < p_ok).astype(int).tolist()
        pairs[t] = {"accuracy": float(np.mean(correct)), "std": 0.0, "pairs": n, "correct": correct}
    return {"pairs": pairs, "auroc": {"auroc": 0.8 if cfg.loss == "qgface" else 0.6}}


class _Trainer:
    def __init__(self, fail_on=None):
        self.calls, self.fail_on = [], fail_on

    def __call__(self, cfg, on_log):
        self.calls.append((cfg.output, cfg.seed))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise RuntimeError("interrupted")
        return {"steps": 8, "images_per_step": cfg.batch_size, "rows_per_step": 16, "wall_s": 0.1,
                "model": "model.pt"}


def _run(tmp_path, trainer, arms="qgface,arcface", seeds=2, log=None):
    profile = dict(PROFILES["quick"], epochs=1)
    lines = []
    res = run_study(arms_mod.parse_arms(arms), seeds, 0, DATA, None, profile, tmp_path, trainer=trainer,
                    evaluator=_fake_evaluator, log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    if log is not None:
        log.extend(lines)
    return res


def test_interrupted_study_resumes_with_what_is_missing(tmp_path):
    first = _Trainer(fail_on=2)
    with pytest.raises(RuntimeError, match="interrupted"):
        _run(tmp_path, first)
    assert (run_dir(tmp_path, "qgface", 0) / RESULT_FILE).is_file()
    assert not (run_dir(tmp_path, "qgface", 1) / RESULT_FILE).exists()
    assert not list(tmp_path.rglob("*.tmp"))  # atomic: no half-written result
    again, lines = _Trainer(), []
    results = _run(tmp_path, again, log=lines)
    assert len(again.calls) == 3  # qgface seed 1, arcface seeds 0 and 1: not qgface seed 0
    assert [s for _, s in again.calls] == [1, 0, 1]
    assert any("qgface seed 0: done before, skipped" in ln for ln in lines)
    done = [ln for ln in lines if ": done in " in ln]
    assert len(done) == 3 and "ETA" in done[0] and "0 runs left" in done[-1]
    assert sorted(results) == [("arcface", 0), ("arcface", 1), ("qgface", 0), ("qgface", 1)]
    assert results["arcface", 1]["train"]["images_per_step"] == 16  # 2B images for the single-view arm
    third = _Trainer()
    _run(tmp_path, third)
    assert third.calls == []


def test_report_files_and_paired_differences(tmp_path):
    results = _run(tmp_path, _Trainer())
    arms = arms_mod.parse_arms("qgface,arcface")
    study = report.summarise(results, arms, resamples=200, meta={"profile": "quick", "seeds": 2, "seed": 0,
                                                                  "pair_counts": P})
    assert study["reference"] == "qgface"
    arm = study["arms"]["qgface"]["pairs"]["HQ–HQ"]
    assert arm["mean"] == pytest.approx(np.mean(arm["per_seed"])) and arm["low"] < arm["mean"] < arm["high"]
    d = study["differences"]["arcface"]["pairs"]["LQ–LQ"]
    want = np.mean([results["qgface", k]["pairs"]["LQ–LQ"]["accuracy"] - results["arcface", k]["pairs"]["LQ–LQ"]
                    ["accuracy"] for k in (0, 1)])
    assert d["diff"] == pytest.approx(want)  # reference − baseline, pooled over seeds and pairs
    assert study["differences"]["arcface"]["auroc"]["mean"] == pytest.approx(0.2)
    paths = report.write(tmp_path, study)
    md = paths["md"].read_text()
    assert "qgface − baseline" in md and "| arcface | 2 |" in md and "Student t" in md
    assert json.loads(paths["json"].read_text())["differences"]["arcface"]["seeds"] == [0, 1]
    assert paths["png"].stat().st_size > 1000


def test_auroc_logger_measures_at_its_steps_and_restores_training_mode():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 112 * 112, 4))
    net.train()
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (6, 112, 112, 3), dtype=np.uint8)
    probes = (clean, (clean // 4).astype(np.uint8))
    log = AurocLogger(probes, every=3, last_step=7)
    for step in range(1, 8):
        log(step, net)
    assert [p["step"] for p in log.curve] == [3, 6, 7]
    assert net.training and all(0.0 <= p["auroc"] <= 1.0 and p["probes"] == 6 for p in log.curve)


# ---------------------------------------------------------------------------------------------- the command
def test_tool_bad_input_exits_2(tmp_path, capsys):
    from _proc import tool as load_tool
    tool = load_tool("study")
    assert tool.main(["--output", str(tmp_path), "--seeds", "0"]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err
    assert tool.main(["--output", str(tmp_path), "--arms", "qgface,nope+lr=1"]) == 2
    assert "not found" in capsys.readouterr().err
    assert tool.main(["--output", str(tmp_path), "--arms", "qgface", "--reference", "arcface"]) == 2
    assert not (tmp_path / "data").exists()
