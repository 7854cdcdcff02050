"""Running a study: every (arm, seed) trained by the real loop, evaluated, its result written atomically.

:func:`run_study` trains each arm (:mod:`.arms`) for each seed ``k`` (``config.seed = seed + k``) with the same
data and budget, through ``trainer(cfg, on_log)`` (default: :func:`qgface_plugin.arcface.training.train`, with
the AUROC logger of :mod:`.evaluate` as its ``on_log``), then ``evaluator(cfg, summary)`` (default: the trained
``model.pt`` loaded back and scored by :func:`~.evaluate.verify_pairs` and :func:`~.evaluate.norm_auroc`, and
the evaluation suite on the ``--data`` benchmarks when given). Each finished run writes
``<output>/runs/<arm>/seed<k>/result.json`` atomically; a re-run skips the runs that have one (and says so), so an
interrupted study resumes with what is missing (a run interrupted half-way is trained again from its start).
A result holds the run's arm, seed, views and config, the training summary's headline figures, the AUROC curve,
the times, the evaluation, and ``"diagnostics"``: QGFace's training diagnostics from the summary's history
(:func:`~.diagnostics.training_diagnostics`: rows classified HQ, pairs contrasted per quarter, queue fill; None
for a single-view baseline). A result loaded from an earlier study without them gets them from its run's
``train/summary.json`` when that is there (the old ``result.json`` is not rewritten).
One progress line per finished run: its time, the elapsed time and the estimate for the runs left.

:data:`PROFILES` size a study: ``cpu`` (a 2-core machine: 3 arms x 2 seeds in about 45 minutes, data and
evaluation included), ``gpu`` (one device: larger data, r18, fp16; not run here) and ``quick`` (seconds, for the
tests).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from ..utils import atomic_write
from .arms import study_config, views_of
from .diagnostics import training_diagnostics

__all__ = ["PROFILES", "RESULT_FILE", "run_dir", "run_study", "default_trainer", "default_evaluator", "fmt_seconds"]

RESULT_FILE = "result.json"

def _dataset(identities, per_identity, val_identities, val_pairs, lq_fraction=0.3) -> dict:
    """make_dataset's sizes for a profile (the held-out identities make the .bin pairs)."""
    return {"num_identities": identities, "images_per_identity": per_identity, "lq_fraction": lq_fraction,
            "num_val_identities": val_identities, "val_pairs": val_pairs}


PROFILES = {
    "cpu": {
        "base": "qgface_demo_cpu",
        "base_overrides": {"network": "mbf", "embedding_size": 128, "batch_size": 32, "num_workers": 2},
        # measured (2 cores, shared): 3.4-3.7 s per step of 64 rows (QGFace and ArcFace alike), evaluation about
        # 1 min per run: 92 steps -> about 6.5 min per run, 3 arms x 2 seeds about 40 min with the data
        "dataset": _dataset(100, 15, 40, 600),
        "epochs": 2, "auroc_every": 30, "probes": 100, "device": "cpu", "batch_size_eval": 64,
    },
    "gpu": {
        "base": "qgface_demo_cpu",
        "base_overrides": {"network": "r18", "embedding_size": 512, "batch_size": 128, "num_workers": 8,
                           "fp16": True, "channels_last": False, "lr": 0.1, "qgface_queue_size": 16384},
        "dataset": _dataset(2000, 40, 200, 4000),
        "epochs": 10, "auroc_every": 200, "probes": 1000, "device": "cuda", "batch_size_eval": 256,
    },
    "quick": {
        "base": "qgface_demo_cpu",
        "base_overrides": {"network": "mbf", "embedding_size": 32, "batch_size": 8, "num_workers": 0,
                           "channels_last": False, "qgface_queue_size": 64},
        "dataset": _dataset(8, 6, 4, 40),
        "epochs": 1, "auroc_every": 3, "probes": 8, "device": "cpu", "batch_size_eval": 32,
    },
}


def fmt_seconds(s) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def run_dir(output, arm_name, k) -> Path:
    return Path(output) / "runs" / arm_name / f"seed{k}"


def default_trainer(root=None):
    """``trainer(cfg, on_log) -> summary``: the real training loop."""
    def trainer(cfg, on_log):
        from ..arcface.training import train
        return train(cfg, root, on_log=on_log)
    return trainer


def default_evaluator(data, probes, profile, root=None, suite=None):
    """``evaluator(cfg, summary) -> dict``: ``model.pt`` loaded back; pair verification, the norm's AUROC, and
    ``suite(model_path, network, out_dir) -> summary`` (the evaluation suite on ``--data``) when given."""
    def evaluator(cfg, summary):
        from ..arcface.backbone import load_backbone
        from ..eval.features import FeatureExtractor
        from .evaluate import norm_auroc, verify_pairs
        model = load_backbone(cfg.network, summary["model"], root=root)
        dev, bs = profile["device"], profile["batch_size_eval"]
        out = {"pairs": verify_pairs(FeatureExtractor(model, dev, bs, flip="sum"), data["pairs"]),
               "auroc": norm_auroc(FeatureExtractor(model, dev, bs, flip="none"), probes)}
        if suite is not None:
            out["suite"] = suite(summary["model"], cfg.network, Path(cfg.output).parent / "suite")
        return out
    return evaluator


def _study_keys(data, profile, output, arm, k, seed):
    return {"rec": data["rec"], "num_classes": data["num_classes"], "num_image": data["num_image"],
            "num_epoch": profile["epochs"], "seed": seed + k, "output": str(run_dir(output, arm.name, k) / "train"),
            "val_targets": [], "save_all_states": False, "resume": False, "verbose": 10 ** 9}


def _configs(arms, seeds, seed, data, profile, output, match_rows):
    out = {}
    for arm in arms:
        for k in range(seeds):
            cfg = study_config(arm, profile["base"], profile["base_overrides"],
                               _study_keys(data, profile, output, arm, k, seed), match_rows)
            cfg.frequent = math.gcd(int(cfg.frequent), int(profile["auroc_every"]))
            out[arm.name, k] = cfg
    return out


def _total_steps(cfg) -> int:
    return (cfg.num_image // cfg.batch_size) * cfg.num_epoch  # one process (the study trains in this one)


def _saved_diagnostics(run) -> dict | None:
    """The diagnostics of an earlier run from its ``train/summary.json`` (None when that is missing or unreadable)."""
    path = Path(run) / "train" / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return training_diagnostics(summary.get("history")) if isinstance(summary, dict) else None


def run_study(arms, seeds, seed, data, probes, profile, output, trainer=None, evaluator=None, match_rows=True,
              log=print) -> dict:
    """Train and evaluate what is missing; returns ``{(arm name, k): result}`` of every finished run.

    ``data`` is :func:`~.data.prepare_data`'s, ``probes`` the probe set's ``(clean, degraded)``; an exception of
    the trainer or the evaluator propagates (the results written so far stay)."""
    from .evaluate import AurocLogger
    trainer = trainer or default_trainer()
    evaluator = evaluator or default_evaluator(data, probes, profile)
    configs = _configs(arms, seeds, seed, data, profile, output, match_rows)  # every config checked up front
    results, todo = {}, []
    for (name, k), cfg in configs.items():
        path = run_dir(output, name, k) / RESULT_FILE
        if path.is_file():
            results[name, k] = json.loads(path.read_text(encoding="utf-8"))
            if "diagnostics" not in results[name, k]:  # an older study's result: from its training summary
                results[name, k]["diagnostics"] = _saved_diagnostics(run_dir(output, name, k))
            log(f"[study] {name} seed {k}: done before, skipped ({path})")
        else:
            todo.append((name, k))
    t_start, done_times = time.time(), []
    for i, (name, k) in enumerate(todo):
        cfg, t0 = configs[name, k], time.time()
        log(f"[study] [{i + 1}/{len(todo)}] {name} seed {k} (config.seed {cfg.seed}): training "
            f"{_total_steps(cfg)} steps, {views_of(cfg)}", flush=True)
        logger = AurocLogger(probes, profile["auroc_every"], _total_steps(cfg), profile["device"],
                             profile["batch_size_eval"], cfg.channels_last)
        summary = trainer(cfg, logger)
        t_train = time.time() - t0
        evaluation = evaluator(cfg, summary)
        seconds = time.time() - t0
        result = {"arm": name, "k": k, "seed": int(cfg.seed), "views": views_of(cfg),
                  "config": {key: (list(v) if isinstance(v, tuple) else v) for key, v in cfg.items()},
                  "train": {key: summary.get(key) for key in ("steps", "images_per_step", "rows_per_step", "wall_s",
                                                             "network", "device", "final", "model")},
                  "auroc_curve": logger.curve, "diagnostics": training_diagnostics(summary.get("history")),
                  "seconds": {"train": round(t_train, 1), "auroc_logging":
                                                           round(logger.seconds, 1), "total": round(seconds, 1)},
                  **evaluation}
        path = run_dir(output, name, k) / RESULT_FILE
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1, default=str) + "\n",
                                                            encoding="utf-8"))
        results[name, k] = result
        done_times.append(seconds)
        left = len(todo) - i - 1
        eta = sum(done_times) / len(done_times) * left
        log(f"[study] [{i + 1}/{len(todo)}] {name} seed {k}: done in {fmt_seconds(seconds)} (train "
            f"{fmt_seconds(t_train)}, evaluation {fmt_seconds(seconds - t_train)}); elapsed "
            f"{fmt_seconds(time.time() - t_start)}, ETA {fmt_seconds(eta)} for {left} run{'s' * (left != 1)} left",
            flush=True)
    return results
