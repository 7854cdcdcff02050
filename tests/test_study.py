"""Tests for qgface_plugin.study without arcface_torch: the statistics (against hand-worked cases), arm parsing
and each run's config, the resume of an interrupted study (a fake trainer and evaluator), the report files, the
AUROC callback, QGFace's training diagnostics (recorded, reloaded, reported), and tools/study.py's bad-input
exits. The real --quick study is in test_study_run.py."""
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
from qgface_plugin.study.diagnostics import training_diagnostics
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
    def __init__(self, fail_on=None, history=None):
        self.calls, self.fail_on, self.history = [], fail_on, history  # history(cfg) -> the summary's history

    def __call__(self, cfg, on_log):
        self.calls.append((cfg.output, cfg.seed))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise RuntimeError("interrupted")
        summary = {"steps": 8, "images_per_step": cfg.batch_size, "rows_per_step": 16, "wall_s": 0.1,
                   "model": "model.pt"}
        if self.history is not None:
            summary["history"] = self.history(cfg)
        return summary


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


# ------------------------------------------------------------------------------------ training diagnostics
def _step(step, hq, con, b=0.2, fill=1.0, norm=(20.0, 2.0), loss=1.0):
    return {"step": step, "loss": loss, "loss_cls": loss, "loss_con": 0.1, "hq_fraction": hq,
            "contrast_fraction": con, "norm_mean": norm[0], "norm_std": norm[1], "queue_fill": fill,
            "threshold": b, "finite": 1.0}


def test_training_diagnostics_hand_worked():
    hq = [0.5, 0.7, 0.6, 0.6, 0.4, 0.8, 1.0, 0.6]
    con = [0.0, 0.2, 0.4, 0.4, 0.5, 0.7, 0.9, 0.7]
    history = [_step(10 * (i + 1), h, c, fill=(i + 1) / 10, loss=float("nan") if i == 3 else 1.0)
               for i, (h, c) in enumerate(zip(hq, con))]
    history[-1].update(threshold=0.25, norm_mean=21.5, norm_std=3.25)
    got = training_diagnostics(history)
    # means: hq 5.2 / 8 = 0.65, contrasted 3.8 / 8 = 0.475; quarters: steps (10, 20), (30, 40), (50, 60), (70, 80)
    assert got["hq_fraction"] == pytest.approx(0.65) and got["contrast_fraction"] == pytest.approx(0.475)
    assert [q["steps"] for q in got["by_quarter"]] == [[10, 20], [30, 40], [50, 60], [70, 80]]
    assert [q["hq_fraction"] for q in got["by_quarter"]] == pytest.approx([0.6, 0.6, 0.6, 0.8])
    assert [q["contrast_fraction"] for q in got["by_quarter"]] == pytest.approx([0.1, 0.4, 0.6, 0.8])
    assert got["threshold"] == 0.25  # the last logged step's b
    assert got["final"] == pytest.approx({"norm_mean": 21.5, "norm_std": 3.25, "queue_fill": 0.8,
                                          "hq_fraction": 0.6, "contrast_fraction": 0.7})
    assert [p["step"] for p in got["curve"]] == [10, 20, 30, 40, 50, 60, 70, 80]
    assert [p["contrast_fraction"] for p in got["curve"]] == pytest.approx(con)
    assert all(type(v) is float for v in [got["hq_fraction"], got["threshold"], *got["final"].values()])
    json.dumps(got, allow_nan=False)  # JSON-ready
    # a non-finite value is left out of the means; fewer logged steps than 4: as many parts
    short = training_diagnostics([_step(5, 0.5, float("nan")), _step(10, 0.7, 0.3)])
    assert short["contrast_fraction"] == pytest.approx(0.3) and short["hq_fraction"] == pytest.approx(0.6)
    assert [q["steps"] for q in short["by_quarter"]] == [[5, 5], [10, 10]]
    assert short["by_quarter"][0]["contrast_fraction"] is None and short["curve"][0]["contrast_fraction"] is None
    # not a QGFace run, or nothing logged
    assert training_diagnostics([{"step": 5, "loss": 2.0}, {"step": 10, "loss": 1.5}]) is None
    assert training_diagnostics([]) is None and training_diagnostics(None) is None


def _qgface_history(cfg):
    """Seed 0 (config.seed 0): hq 0.6, contrasted 0.1 .. 0.4, queue 0.5 at the end; seed 1: hq 0.8, contrasted
    0.3 .. 0.6, queue full at the end; single-view arms: loss only."""
    if cfg.loss != "qgface":
        return [{"step": s, "loss": 1.0} for s in (2, 4, 6, 8)]
    hq, c0, fill = (0.6, 0.1, 0.5) if cfg.seed == 0 else (0.8, 0.3, 1.0)
    return [_step(s, hq, c0 + 0.1 * i, fill=fill) for i, s in enumerate((2, 4, 6, 8))]


def test_run_study_records_the_diagnostics_and_fills_them_in_for_older_results(tmp_path):
    results = _run(tmp_path, _Trainer(history=_qgface_history))
    on_disk = json.loads((run_dir(tmp_path, "qgface", 1) / RESULT_FILE).read_text())
    assert on_disk["diagnostics"]["contrast_fraction"] == pytest.approx(0.45)
    assert on_disk["diagnostics"]["final"]["queue_fill"] == 1.0
    assert results["qgface", 0]["diagnostics"]["hq_fraction"] == pytest.approx(0.6)
    assert json.loads((run_dir(tmp_path, "arcface", 0) / RESULT_FILE).read_text())["diagnostics"] is None
    # an older study: result.json without "diagnostics"; qgface seed 0 has its train/summary.json, seed 1 none
    for k in (0, 1):
        path = run_dir(tmp_path, "qgface", k) / RESULT_FILE
        old = json.loads(path.read_text())
        del old["diagnostics"]
        path.write_text(json.dumps(old))
    cfg = type("Cfg", (), {"loss": "qgface", "seed": 0})()
    summary = run_dir(tmp_path, "qgface", 0) / "train" / "summary.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps({"steps": 8, "history": _qgface_history(cfg)}))
    before = (run_dir(tmp_path, "qgface", 0) / RESULT_FILE).read_text()
    again = _Trainer()
    reloaded = _run(tmp_path, again)
    assert again.calls == []
    assert reloaded["qgface", 0]["diagnostics"] == training_diagnostics(_qgface_history(cfg))
    assert reloaded["qgface", 0]["diagnostics"]["contrast_fraction"] == pytest.approx(0.25)
    assert reloaded["qgface", 1]["diagnostics"] is None  # no summary.json to fill them from
    assert (run_dir(tmp_path, "qgface", 0) / RESULT_FILE).read_text() == before  # the old result is not rewritten


def test_report_has_the_training_diagnostics_of_the_qgface_arms(tmp_path):
    results = _run(tmp_path, _Trainer(history=_qgface_history))
    study = report.summarise(results, arms_mod.parse_arms("qgface,arcface"), resamples=20)
    paths = report.write(tmp_path, study)
    arm = json.loads(paths["json"].read_text())["arms"]
    d = arm["qgface"]["diagnostics"]
    assert d["hq_fraction"]["per_seed"] == pytest.approx([0.6, 0.8]) and d["hq_fraction"]["mean"] == pytest.approx(0.7)
    assert d["contrast_fraction"]["mean"] == pytest.approx(0.35)  # per seed 0.25 and 0.45
    # t interval over 2 seeds: half-width 12.7062 * sd / sqrt(2), sd = 0.2 / sqrt(2): 1.27062
    assert d["contrast_fraction"]["low"] == pytest.approx(0.35 - 1.270620, abs=1e-5)
    assert [q["contrast_fraction"]["mean"] for q in d["by_quarter"]] == pytest.approx([0.2, 0.3, 0.4, 0.5])
    assert [q["steps"] for q in d["by_quarter"]] == [[2, 2], [4, 4], [6, 6], [8, 8]]
    assert d["threshold"] == pytest.approx(0.2) and d["final"]["queue_fill"] == pytest.approx(0.75)
    assert [p["contrast_fraction"] for p in d["curve"]] == pytest.approx([0.2, 0.3, 0.4, 0.5])
    assert arm["arcface"]["diagnostics"] is None
    md = paths["md"].read_text()
    section = md.split("## Training diagnostics (QGFace arms)")[1]
    assert "| qgface | 0.20 | 70.0 [-57.1, 197.1] | 35.0 [-92.1, 162.1] | 20.0 → 50.0 | 75.0 |" in section
    assert "| arcface |" not in section and "Partial FC" in section and "weight > 0" in section
    width = int.from_bytes(paths["png"].read_bytes()[16:20], "big")  # PNG IHDR: three panels, not two
    assert width == 18 * 110
    # a study without QGFace diagnostics: no section, two panels
    plain = report.summarise(_run(tmp_path / "plain", _Trainer()), arms_mod.parse_arms("qgface,arcface"),
                             resamples=20)
    assert all(a["diagnostics"] is None for a in plain["arms"].values())
    assert "Training diagnostics" not in report.markdown(plain)
    assert int.from_bytes(report.write(tmp_path / "plain", plain)["png"].read_bytes()[16:20], "big") == 12 * 110


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


def test_a_record_set_the_study_did_not_make_is_never_overwritten(tmp_path):
    from qgface_plugin.errors import QGFaceInputError
    from qgface_plugin.study.data import prepare_data
    dataset = dict(PROFILES["quick"]["dataset"])
    own = tmp_path / "own"  # the user's own record set: no dataset.json
    own.mkdir()
    (own / "train.rec").write_bytes(b"user data")
    (own / "train.idx").write_text("0\t0\n")
    with pytest.raises(QGFaceInputError, match="the synthetic generator did not make .* will not overwrite it"):
        prepare_data(own, dataset, seed=0, log=lambda *a, **k: None)
    assert (own / "train.rec").read_bytes() == b"user data" and sorted(p.name for p in own.iterdir()) == \
        ["train.idx", "train.rec"]
    made = tmp_path / "made"
    prepare_data(made, dataset, seed=0, log=lambda *a, **k: None)
    before = (made / "train.rec").read_bytes()
    with pytest.raises(QGFaceInputError, match=r"made with other arguments: seed 0 \(wanted 1\)"):
        prepare_data(made, dataset, seed=1, log=lambda *a, **k: None)
    assert (made / "train.rec").read_bytes() == before
    again = prepare_data(made, dataset, seed=1, log=lambda *a, **k: None, replace=True)  # the study's own folder
    assert again["dataset"]["seed"] == 1 and (made / "train.rec").read_bytes() != before


def test_suite_figures_get_per_seed_differences_with_a_t_interval(tmp_path):
    results = _run(tmp_path, _Trainer())
    tar = {("qgface", 0): 0.60, ("qgface", 1): 0.70, ("arcface", 0): 0.50, ("arcface", 1): 0.64}
    for key, r in results.items():
        r["suite"] = {"benchmarks": {"ijbc": {"headline": {"TAR@FAR=1e-4": tar[key], "note": "text"}}}}
    study = report.summarise(results, arms_mod.parse_arms("qgface,arcface"), resamples=50)
    d = study["differences"]["arcface"]["suite"]["ijbc / TAR@FAR=1e-4"]
    assert d["per_seed"] == pytest.approx([0.10, 0.06]) and d["mean"] == pytest.approx(0.08)
    # t_{0.975, 1} = 12.706, sd of (0.10, 0.06) = 0.02 * sqrt(2), half width = 12.706 * 0.02 = 0.2541
    assert d["low"] == pytest.approx(0.08 - 0.25412, abs=1e-4) and d["high"] == pytest.approx(0.08 + 0.25412, abs=1e-4)
    md = report.markdown(study)
    assert "qgface − baseline on these figures" in md and "| ijbc / TAR@FAR=1e-4 | +8.0 [-17.4, +33.4] |" in md


@pytest.mark.parametrize("seeds, says", [(1, "with 1 seed there is no interval over seeds"),
                                         (2, "with 2 seeds t = 12.7, so the interval is wide."),
                                         (6, "with 6 seeds t = 2.57.")])
def test_the_report_says_what_the_seed_count_does_to_the_interval(seeds, says):
    arms = {"qgface": {"seeds": list(range(seeds))}, "arcface": {"seeds": list(range(seeds + 1))}}
    assert report._seeds_note({"arms": arms, "level": 0.95}).startswith(says)
