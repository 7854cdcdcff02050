"""tools/study.py --quick end to end in this process, in the default test run (no arcface_torch needed).

Real: the tool's ``main(argv)`` (argument checks, profile, exit codes, error handling), the data
(:func:`qgface_plugin.study.data.prepare_data`: the synthetic record set and its HQ–HQ / HQ–LQ pair sets, the
LQ–LQ set, the probe set, reuse on a re-run), :func:`~qgface_plugin.study.runner.run_study` (the arms' configs,
row matching, result files, resume, progress lines), the :class:`~qgface_plugin.study.evaluate.AurocLogger`
callback, the evaluation (:func:`~qgface_plugin.study.evaluate.verify_pairs` with the 10-fold protocol,
:func:`~qgface_plugin.study.evaluate.norm_auroc`, the real :class:`~qgface_plugin.eval.features.FeatureExtractor`),
the training diagnostics and the report (study.md / study.json / study.png, the paired bootstrap).

Stand-ins, for the three arcface_torch-dependent pieces only:

* ``qgface_plugin.arcface.checkout.find_root`` -> a no-op;
* the trainer (``default_trainer`` in the tool module's namespace) -> :class:`StandInTrainer`: a tiny pure-torch
  embedding net (:class:`TinyNet`) given a few SGD steps of softmax cross-entropy on images of the study's own
  record set (``cfg.rec``, read with :class:`~qgface_plugin.formats.record_dataset.RecordDataset`: the loop's
  normalisation), ``on_log(step, backbone)`` called at the loop's logging steps (``step % cfg.frequent == 0`` and
  the last), ``model.pt`` saved, and a summary with the keys the runner reads (for a QGFace arm a history with
  the loop's diagnostic entries, made up from the batch's feature norms);
* ``qgface_plugin.arcface.backbone.load_backbone`` -> a loader of :class:`TinyNet`'s state dict.

tests/test_study_run.py runs the same study with the real training loop (upstream's backbone and Partial FC)
when ARCFACE_TORCH_ROOT is set.
"""
import json
import math
import time
from pathlib import Path

import pytest
import torch

from _proc import tool as load_tool
from qgface_plugin.arcface import backbone as backbone_mod
from qgface_plugin.arcface import checkout
from qgface_plugin.errors import QGFaceNonFiniteError
from qgface_plugin.formats.record_dataset import RecordDataset

PAIR_TYPES = {"HQ–HQ", "HQ–LQ", "LQ–LQ"}


class TinyNet(torch.nn.Module):
    """[N, 3, 112, 112] in [-1, 1] -> raw embeddings [N, D]."""

    def __init__(self, embedding_size):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, kernel_size=8, stride=8)
        self.pool = torch.nn.AdaptiveAvgPool2d(2)
        self.fc = torch.nn.Linear(32, embedding_size)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


class StandInTrainer:
    """``trainer(cfg, on_log) -> summary`` without arcface_torch; records each call and what it returned."""

    def __init__(self, fail_for=()):
        self.fail_for = set(fail_for)  # losses whose run raises QGFaceNonFiniteError (a diverged run)
        self.calls = []  # (arm folder name, cfg.loss)
        self.summaries = {}  # arm folder name -> summary returned
        self.on_log_steps = {}  # arm folder name -> steps on_log was called at

    def __call__(self, cfg, on_log):
        arm = Path(cfg.output).parents[1].name  # <output>/runs/<arm>/seed<k>/train
        self.calls.append((arm, cfg.loss))
        if cfg.loss in self.fail_for:
            raise QGFaceNonFiniteError(f"{arm}: 3 consecutive steps with a non-finite loss (stand-in)")
        qgface = cfg.loss == "qgface"
        total = (cfg.num_image // cfg.batch_size) * cfg.num_epoch  # one process, as the loop counts
        t0 = time.perf_counter()
        history, logged, last = [], [], {}
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            net = TinyNet(cfg.embedding_size)
            head = torch.nn.Linear(cfg.embedding_size, cfg.num_classes, bias=False)
            opt = torch.optim.SGD([*net.parameters(), *head.parameters()], lr=0.05)
            loader = torch.utils.data.DataLoader(RecordDataset(cfg.rec), batch_size=cfg.batch_size, shuffle=True,
                                                 drop_last=True, num_workers=0)
            net.train()
            step = 0
            while step < total:
                for images, labels in loader:
                    feats = net(images)
                    loss = torch.nn.functional.cross_entropy(head(torch.nn.functional.normalize(feats)) * 16.0,
                                                             labels)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    step += 1
                    last = {"loss": loss.item()}
                    if step % cfg.frequent == 0:
                        entry = {"step": step, "loss": loss.item()}
                        if qgface:
                            norms = feats.detach().norm(dim=1)
                            hq = float((norms >= norms.mean()).float().mean())
                            entry.update(hq_fraction=hq, contrast_fraction=1.0 - hq,
                                         queue_fill=min(1.0, step * 2 * cfg.batch_size / cfg.qgface_queue_size),
                                         norm_mean=float(norms.mean()), norm_std=float(norms.std()),
                                         threshold=float(cfg.qgface_threshold))
                        history.append(entry)
                    if step % cfg.frequent == 0 or step == total:
                        logged.append(step)
                        on_log(step, net)
                    if step == total:
                        break
        out = Path(cfg.output)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), out / "model.pt")
        summary = {"steps": step, "images_per_step": cfg.batch_size,
                   "rows_per_step": cfg.batch_size * (2 if qgface else 1), "wall_s": round(time.perf_counter() - t0, 1),
                   "network": cfg.network, "device": "cpu", "final": last, "model": str(out / "model.pt"),
                   "history": history}
        self.summaries[arm], self.on_log_steps[arm] = summary, logged
        return summary


@pytest.fixture
def study(monkeypatch, tmp_path):
    """``run(argv, trainer) -> exit code``: the tool's main with the stand-ins; ``loaded`` lists the models loaded."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(checkout, "find_root", lambda root=None: None)
    loaded = []

    def load_backbone(network, model_path, embedding_size=None, root=None):
        state = torch.load(model_path, map_location="cpu", weights_only=True)
        net = TinyNet(state["fc.weight"].shape[0])
        net.load_state_dict(state)
        loaded.append((network, str(model_path)))
        return net.eval()

    monkeypatch.setattr(backbone_mod, "load_backbone", load_backbone)
    tool = load_tool("study")

    def run(argv, trainer):
        monkeypatch.setattr(tool, "default_trainer", lambda root=None: trainer)
        return tool.main([str(a) for a in argv])

    run.loaded = loaded
    return run


def _argv(out, arms="qgface,arcface"):
    return ["--quick", "--arms", arms, "--seeds", "1", "--bootstrap", "50", "--output", out]


def _json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def test_quick_study_trains_evaluates_reports_and_resumes(study, tmp_path, capsys):
    out = tmp_path / "study"
    trainer = StandInTrainer()
    assert study(_argv(out), trainer) == 0
    stdout = capsys.readouterr().out
    assert trainer.calls == [("qgface", "qgface"), ("arcface", "arcface")]
    for name in ("study.md", "study.json", "study.png", "data/study_val_lqlq.bin", "runs/qgface/seed0/result.json",
                 "runs/arcface/seed0/result.json"):
        assert (out / name).is_file(), name
    assert "ETA" in stdout and "data: generating" in stdout
    rep = _json(out / "study.json")
    assert set(rep["arms"]) == {"qgface", "arcface"} and rep["reference"] == "qgface"
    meta = rep["meta"]
    assert meta["pair_counts"].keys() == PAIR_TYPES and all(n > 0 for n in meta["pair_counts"].values())
    for arm, info in rep["arms"].items():
        summary = trainer.summaries[arm]
        result = _json(out / "runs" / arm / "seed0" / "result.json")
        # steps and rows as the runner reports them: the trainer's summary, through result.json, into study.json
        assert info["steps"] == result["train"]["steps"] == summary["steps"] > 0
        assert info["rows_per_step"] == result["train"]["rows_per_step"] == summary["rows_per_step"]
        assert info["images_per_step"] == result["train"]["images_per_step"] == summary["images_per_step"]
        assert set(info["pairs"]) == PAIR_TYPES == set(result["pairs"])
        for t, p in info["pairs"].items():
            assert 0.0 <= p["mean"] <= 1.0 and p["per_seed"] == [result["pairs"][t]["accuracy"]]
            assert result["pairs"][t]["pairs"] == meta["pair_counts"][t]
            assert len(result["pairs"][t]["correct"]) == meta["pair_counts"][t]
        assert 0.0 <= info["auroc"]["mean"] <= 1.0 and result["auroc"]["probes"] == meta["probes"]
        # the AUROC curve: the steps on_log was called at that are every auroc_every-th or the last
        asked = trainer.on_log_steps[arm]
        want = [s for s in asked if s % meta["auroc_every"] == 0 or s == info["steps"]]
        assert [p["step"] for p in info["auroc_curve"]] == want == [p["step"] for p in result["auroc_curve"]]
        assert want and want[-1] == info["steps"]
        assert all(0.0 <= p["auroc"] <= 1.0 for p in result["auroc_curve"])
        assert (info["network"], summary["model"]) in study.loaded  # the evaluator scored the trained model
    q, a = rep["arms"]["qgface"], rep["arms"]["arcface"]
    # row matching: the same steps and forwarded rows per step, the single-view arm with twice the images
    assert q["steps"] == a["steps"] and q["rows_per_step"] == a["rows_per_step"]
    assert a["images_per_step"] == 2 * q["images_per_step"]
    assert [p["step"] for p in q["auroc_curve"]] == [3, 6]  # the quick profile: 6 steps, AUROC every 3
    diff = rep["differences"]["arcface"]
    assert set(diff) >= {"pairs", "auroc"} and set(diff["pairs"]) == PAIR_TYPES and diff["seeds"] == [0]
    assert all(math.isfinite(d["diff"]) for d in diff["pairs"].values())
    # QGFace's diagnostics from the history the trainer logged; none for the single-view arm
    logged = trainer.summaries["qgface"]["history"]
    dq = q["diagnostics"]
    assert dq is not None and a["diagnostics"] is None
    assert dq["hq_fraction"]["mean"] == pytest.approx(sum(e["hq_fraction"] for e in logged) / len(logged))
    assert dq["final"]["queue_fill"] == pytest.approx(logged[-1]["queue_fill"])
    assert dq["threshold"] == pytest.approx(logged[-1]["threshold"])
    assert [p["step"] for p in dq["curve"]] == [e["step"] for e in logged]
    assert _json(out / "runs" / "arcface" / "seed0" / "result.json")["diagnostics"] is None
    md = (out / "study.md").read_text(encoding="utf-8")
    assert "qgface − baseline" in md and "Training diagnostics" in md
    before = {arm: (out / "runs" / arm / "seed0" / "result.json").read_text() for arm in ("qgface", "arcface")}

    again = StandInTrainer()
    assert study(_argv(out), again) == 0
    stdout = capsys.readouterr().out
    assert again.calls == []
    assert stdout.count("done before, skipped") == 2 and "): training " not in stdout
    assert "data: reusing" in stdout
    for arm, text in before.items():
        assert (out / "runs" / arm / "seed0" / "result.json").read_text() == text
    assert set(_json(out / "study.json")["arms"]) == {"qgface", "arcface"}


def test_a_diverged_run_exits_1_and_keeps_the_runs_before_it(study, tmp_path, capsys):
    out = tmp_path / "study"
    failing = StandInTrainer(fail_for={"arcface"})
    assert study(_argv(out), failing) == 1
    captured = capsys.readouterr()
    assert failing.calls == [("qgface", "qgface"), ("arcface", "arcface")]
    assert "non-finite" in captured.err and "finished runs are kept" in captured.err
    assert (out / "runs" / "qgface" / "seed0" / "result.json").is_file()
    assert not (out / "runs" / "arcface" / "seed0" / "result.json").exists()
    assert not (out / "study.json").exists()
    kept = (out / "runs" / "qgface" / "seed0" / "result.json").read_text()

    working = StandInTrainer()
    assert study(_argv(out), working) == 0
    stdout = capsys.readouterr().out
    assert working.calls == [("arcface", "arcface")]  # only the run that was missing
    assert "qgface seed 0: done before, skipped" in stdout and "data: reusing" in stdout
    assert (out / "runs" / "qgface" / "seed0" / "result.json").read_text() == kept
    rep = _json(out / "study.json")
    assert set(rep["arms"]) == {"qgface", "arcface"} and set(rep["differences"]["arcface"]["pairs"]) == PAIR_TYPES
