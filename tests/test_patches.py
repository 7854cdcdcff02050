"""patches/*.patch and qgface_plugin.arcface.hooks: upstream's own train_v2.py trains QGFace.

The hook tests at the top always run. The others need a copy of arcface_torch at the pinned
commit named by ``ARCFACE_TORCH_ROOT`` and skip without it: they copy it into a temporary folder,
apply the patches with ``git apply`` and run the patched ``train_v2.py`` on a tiny synthetic record
set through ``tools/run_upstream.py`` (CPU shims; one process, and two with torchrun), and once as users run
it: ``torchrun train_v2.py configs/<name>`` inside the copy, without run_upstream.py (trains with CUDA; on a
CPU it must get past its imports, tensorboard included, and load the config).
The ``tools/fetch_arcface_torch.py`` test needs ``INSIGHTFACE_GIT_DIR`` (an insightface clone or git
directory holding the pinned commit) as well.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from easydict import EasyDict as edict

from _proc import ROOT, free_port, needs_git, run_guarded, upstream_root
from qgface_plugin.arcface import checkout, hooks
from qgface_plugin.errors import QGFaceConfigError, QGFaceInputError
from qgface_plugin.views import TwoViewTransform

PATCHES = sorted((ROOT / "patches").glob("*.patch"))
GIT_DIR_ENV = os.environ.get("INSIGHTFACE_GIT_DIR")

BATCH = 4
IDS, PER_ID = 8, 3            # 24 images: 6 steps of 4 per epoch on one process (CPU time)
NUM_IMAGES = IDS * PER_ID
STEPS = NUM_IMAGES // BATCH
QUEUE = 256                   # > every row enqueued here, so num_filled counts all steps
QGFACE_STATE = {"queue.features", "queue.labels", "queue.centres", "queue.centre_inv_norm", "queue.ptr",
                "queue.num_filled", "partition.mean", "partition.std", "partition.num_updates"}


# ------------------------------------------------------------------------------- hooks (no upstream)

def test_patch_files_are_plain_relative_diffs():
    assert [p.name for p in PATCHES] == ["0001-lr_scheduler-torch27.patch", "0002-train_v2-qgface.patch"]
    for patch in PATCHES:
        text = patch.read_text(encoding="utf-8")
        assert "\r" not in text
        files = re.findall(r"^\+\+\+ (\S+)", text, re.M)
        assert files and all(f.startswith("b/") and "/" not in f[2:] for f in files), files
        assert re.findall(r"^--- (\S+)", text, re.M) == ["a/" + f[2:] for f in files]
        assert not re.search(r"(/work/|/tmp/|/home/|/Users/|[A-Z]:\\)", text), f"machine path in {patch.name}"


def _cfg(**keys):
    cfg = edict(rec="synthetic", num_classes=8, num_image=32, num_epoch=1, warmup_epoch=0, batch_size=4,
                optimizer="sgd", sample_rate=1.0, embedding_size=16, margin_list=(1.0, 0.5, 0.0), seed=2048,
                network="mbf", lr=0.1, fp16=False, dali=False, gradient_acc=1, using_wandb=False)
    cfg.update(keys)
    return cfg


def test_configure_leaves_upstream_losses_alone():
    for loss in (None, "arcface", "cosface"):
        cfg = _cfg(qgface_anything=1) if loss is None else _cfg(loss=loss, qgface_anything=1)
        before = dict(cfg)
        assert hooks.configure(cfg) is False and dict(cfg) == before
    with pytest.raises(QGFaceConfigError, match="config.loss must be one of"):
        hooks.configure(_cfg(loss="qgfac"))


def test_configure_fills_qgface_defaults_and_validates():
    cfg = _cfg(loss="qgface", qgface_threshold=0.3, wandb_key="x", some_upstream_key=1)
    assert hooks.configure(cfg) is True
    assert cfg.qgface_threshold == 0.3 and cfg.qgface_lambda == 1.0 and cfg.qgface_hq_mode == "gate"
    assert tuple(cfg.qgface_view_scale) == (0.1, 0.5) and cfg.some_upstream_key == 1
    with pytest.raises(QGFaceConfigError, match="did you mean 'qgface_threshold'"):
        hooks.configure(_cfg(loss="qgface", qgface_treshold=0.3))
    with pytest.raises(QGFaceConfigError, match="dali"):
        hooks.configure(_cfg(loss="qgface", dali=True))
    with pytest.raises(QGFaceConfigError, match="num_image"):
        hooks.configure(_cfg(loss="qgface", num_image=None))


class _Loader:
    def __init__(self, dataset):
        self.dataset = dataset


def test_prepare_loader_gives_each_dataset_kind_two_views():
    cfg = _cfg(loss="qgface")
    hooks.configure(cfg)
    rec = types.SimpleNamespace(transform="upstream", imgrec=object())
    loader = _Loader(rec)
    assert hooks.prepare_loader(loader, cfg) is loader and isinstance(rec.transform, TwoViewTransform)
    img = torch.zeros(112, 112, 3, dtype=torch.uint8).numpy()
    assert rec.transform(img).shape == (2, 3, 112, 112)
    folder = types.SimpleNamespace(transform="upstream")           # ImageFolder: PIL images
    hooks.prepare_loader(_Loader(folder), cfg)
    from PIL import Image
    assert folder.transform(Image.new("RGB", (112, 112))).shape == (2, 3, 112, 112)
    synthetic = types.SimpleNamespace(img=torch.randn(3, 112, 112))
    hooks.prepare_loader(_Loader(synthetic), cfg)
    assert synthetic.img.shape == (2, 3, 112, 112) and torch.equal(synthetic.img[0], synthetic.img[1])
    untouched = types.SimpleNamespace(transform="upstream", imgrec=object())
    hooks.prepare_loader(_Loader(untouched), _cfg(loss="arcface"))
    assert untouched.transform == "upstream"
    with pytest.raises(QGFaceConfigError, match="dali"):
        hooks.prepare_loader(object(), cfg)


def test_stack_views_orders_h_then_l():
    img = torch.arange(2 * 2 * 3).float().view(2, 2, 3, 1, 1)
    out = hooks.stack_views(img)
    assert torch.equal(out, torch.cat([img[:, 0], img[:, 1]]))
    with pytest.raises(QGFaceInputError, match="prepare_loader"):
        hooks.stack_views(torch.zeros(2, 3, 4, 4))


def _fake_partial_fc_module():
    """A stand-in for upstream's partial_fc_v2 module (one process, no collectives needed here)."""
    module = types.ModuleType("_fake_partial_fc_v2")

    class PartialFC_V2(torch.nn.Module):  # noqa: N801 (upstream's name)
        def __init__(self, margin_loss, embedding_size, num_classes, sample_rate=1.0, fp16=False):
            super().__init__()
            self.margin_softmax, self.embedding_size, self.sample_rate, self.fp16 = (
                margin_loss, embedding_size, sample_rate, fp16)
            self.class_start, self.num_local = 0, num_classes
            self.weight = torch.nn.Parameter(torch.normal(0, 0.01, (num_classes, embedding_size)))

        def forward(self, local_embeddings, local_labels):
            logits = torch.nn.functional.linear(torch.nn.functional.normalize(local_embeddings),
                                                torch.nn.functional.normalize(self.weight)).clamp(-1, 1)
            return torch.nn.functional.cross_entropy(self.margin_softmax(logits, local_labels.view(-1, 1)),
                                                     local_labels.view(-1))

    module.PartialFC_V2 = PartialFC_V2
    module.AllGather = None
    PartialFC_V2.__module__ = module.__name__
    return module


def test_build_loss_and_state_round_trip(monkeypatch):
    module = _fake_partial_fc_module()
    monkeypatch.setitem(sys.modules, module.__name__, module)
    cfg = _cfg(loss="qgface", qgface_queue_size=32, qgface_stats_init="first_batch", qgface_threshold=0.5,
               total_batch_size=4, frequent=1)
    hooks.configure(cfg)
    upstream_pfc = module.PartialFC_V2(lambda logits, labels: logits, 16, 8, 1.0, False)
    pfc, criterion = hooks.build(cfg, upstream_pfc)
    assert isinstance(pfc, module.PartialFC_V2) and type(pfc) is not module.PartialFC_V2
    assert torch.equal(pfc.weight, upstream_pfc.weight) and criterion.classifier is pfc and criterion.training
    torch.manual_seed(0)
    for step in (1, 2):
        emb = torch.randn(8, 16, requires_grad=True) * torch.linspace(0.5, 2, 8).view(-1, 1)
        value = hooks.loss(criterion, emb, torch.tensor([0, 1, 2, 3]), cfg, step)
        value.backward()
        assert value.dim() == 0 and math.isfinite(value.item())
    state = hooks.state_dict(criterion)
    assert set(state) == QGFACE_STATE
    assert int(state["queue.num_filled"]) == 16 and int(state["partition.num_updates"]) == 2
    _, fresh = hooks.build(cfg, module.PartialFC_V2(lambda logits, labels: logits, 16, 8, 1.0, False))
    hooks.load_state_dict(fresh, {"state_qgface": state})
    assert fresh.queue.filled == 16 and all(torch.equal(v, hooks.state_dict(fresh)[k]) for k, v in state.items())
    with pytest.raises(QGFaceInputError, match="state_qgface"):
        hooks.load_state_dict(fresh, {"epoch": 1})


# ------------------------------------------------------------------------- patches on arcface_torch

def _git_env(folder: Path) -> dict:
    env = dict(os.environ)
    env["GIT_CEILING_DIRECTORIES"] = str(folder.parent)  # the copy is no work tree of anything
    return env


def _git_apply(folder: Path, patch: Path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "apply", "-p1", *extra, str(patch)], cwd=folder, capture_output=True, text=True,
                          env=_git_env(folder))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, arcface_root) -> Path:
    dest = tmp_path_factory.mktemp("pristine") / "arcface_torch"
    shutil.copytree(checkout.find_root(arcface_root), dest, ignore=shutil.ignore_patterns("__pycache__"))
    for patch in reversed(PATCHES):  # a copy from tools/fetch_arcface_torch.py is already patched: undo
        if _git_apply(dest, patch, "--check").returncode != 0 and \
                _git_apply(dest, patch, "--check", "--reverse").returncode == 0:
            assert _git_apply(dest, patch, "--reverse").returncode == 0, patch.name
    return dest


@pytest.fixture(scope="module")
def patched(pristine, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("patched") / "arcface_torch"
    shutil.copytree(pristine, dest)
    for patch in PATCHES:
        proc = _git_apply(dest, patch)
        assert proc.returncode == 0, f"{patch.name}: {proc.stderr}"
    return dest


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    from qgface_plugin.synthetic import make_dataset
    out = tmp_path_factory.mktemp("records")
    make_dataset(out, num_identities=IDS, images_per_identity=PER_ID, num_val_identities=4, val_pairs=40, seed=0)
    return out


@needs_git
@pytest.mark.upstream
def test_patches_apply_cleanly_to_the_pinned_files(pristine, patched):
    for rel, blob in checkout.PINNED_BLOBS.items():  # the copy really is the pinned commit
        assert checkout.git_blob_sha1(pristine / rel) == blob, rel
    for patch in PATCHES:
        proc = _git_apply(pristine, patch, "--check")
        assert proc.returncode == 0, f"{patch.name} does not apply to the pinned copy: {proc.stderr}"
        proc = _git_apply(patched, patch, "--check", "--reverse")
        assert proc.returncode == 0, f"{patch.name} is not what the patched copy holds: {proc.stderr}"
    changed = sorted(p.relative_to(patched).as_posix() for p in patched.rglob("*.py")
                     if (pristine / p.relative_to(patched)).read_bytes() != p.read_bytes())
    assert changed == ["lr_scheduler.py", "train_v2.py"]


def _polynomial_lrs(root: Path, name: str) -> list:
    """LRs of the copy's PolynomialLRWarmup(warmup 2, total 4), imported under a private module name."""
    spec = importlib.util.spec_from_file_location(name, root / "lr_scheduler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = module.PolynomialLRWarmup(opt, warmup_iters=2, total_iters=4)
    lrs = []
    for _ in range(4):
        opt.step()
        sched.step()
        lrs.append(round(sched.get_last_lr()[0], 6))
    return lrs


@pytest.mark.upstream
def test_patched_lr_scheduler_works_on_this_torch_without_shims(pristine, patched):
    init = torch.optim.lr_scheduler.LRScheduler.__init__
    if getattr(init, "_qgface_drops_verbose", False):
        pytest.skip("compat.install_lr_scheduler_compat is in effect in this process")
    assert _polynomial_lrs(patched, "_patched_lr_scheduler") == [0.5, 1.0, 0.5, 0.0]
    if "verbose" not in checkout.parameter_names(init):  # torch >= 2.7: what patch 0001 fixes
        with pytest.raises(TypeError, match="verbose"):
            _polynomial_lrs(pristine, "_pristine_lr_scheduler")


# --------------------------------------------------------------------------------- train_v2 runs

def _env(threads: int) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def _run(cmd, cwd, timeout=240, threads=2) -> subprocess.CompletedProcess:
    return run_guarded(cmd, timeout, cwd=cwd, env=_env(threads))


def _config(tmp_path: Path, name: str, records: Path, **keys) -> Path:
    """configs/<name> in tmp_path/configs (merged by upstream's get_config onto upstream's base.py)."""
    values = dict(network="mbf", embedding_size=64, rec=str(records), num_classes=IDS, num_image=NUM_IMAGES,
                  num_epoch=2, warmup_epoch=0, batch_size=BATCH, lr=0.05, num_workers=0, verbose=10 ** 9,
                  frequent=1, val_targets=[], save_all_states=True, output=str(tmp_path / "out"))
    values.update(keys)
    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir(exist_ok=True)
    (cfg_dir / f"{name}.py").write_text("from easydict import EasyDict as edict\nconfig = edict()\n"
                                        + "".join(f"config.{k} = {v!r}\n" for k, v in values.items()))
    return cfg_dir


def _train_v2(root: Path, cfg_dir: Path, name: str, cwd: Path, nproc: int = 1, prefix=()):
    launcher = [sys.executable, *prefix, ROOT / "tools" / "run_upstream.py", "--root", root, "--config-dir", cfg_dir,
                "train_v2.py", f"configs/{name}"]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", nproc, "--master_addr",
                    "127.0.0.1", "--master_port", free_port(), *launcher[1:]]
    return _run(launcher, cwd, threads=max(1, 2 // nproc))


def _upstream_losses(log_text: str) -> list:
    """CallBackLogging's "Loss %.4f" (its first line comes at the second `frequent` step)."""
    return [float(v) for v in re.findall(r"   Loss ([-+0-9.eEnaif]+)", log_text)]


def _qgface_lines(log_text: str) -> list:
    pattern = (r"QGFace step (\d+): loss (\S+)  cls (\S+)  con (\S+)  hq (\d+)%  contrasted (\d+)%  b (\S+)")
    return [dict(step=int(m[0]), loss=float(m[1]), cls=float(m[2]), con=float(m[3]), hq=int(m[4]),
                 contrasted=int(m[5]), b=float(m[6])) for m in re.findall(pattern, log_text)]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)  # as upstream's resume (torch >= 2.6)


def _check_run(proc, out: Path, first_step: int, last_step: int, qgface=True, log_offset=0) -> str:
    """Exit 0, model.pt, checkpoint, finite logged losses; returns this run's part of training.log."""
    assert proc.returncode == 0, proc.stdout[-6000:]
    model = _load(out / "model.pt")
    assert model and not any(k.startswith("module.") for k in model), list(model)[:5]
    ckpt = _load(out / "checkpoint_gpu_0.pt")
    assert set(model) == set(ckpt["state_dict_backbone"])
    assert ckpt["global_step"] == last_step
    log = (out / "training.log").read_bytes()[log_offset:].decode()  # a resumed run appends to it
    losses = _upstream_losses(log)
    assert len(losses) >= last_step - first_step and all(math.isfinite(v) for v in losses), losses
    lines = _qgface_lines(log)
    if qgface:
        assert [d["step"] for d in lines] == list(range(first_step, last_step + 1)), lines
        assert all(math.isfinite(d[k]) for d in lines for k in ("loss", "cls", "con")), lines
        assert "state_qgface" in ckpt
    else:
        assert not lines and "state_qgface" not in ckpt and "QGFace" not in log
    return log


@needs_git
@pytest.mark.upstream
def test_train_v2_qgface_trains_checkpoints_and_resumes(patched, records, tmp_path):
    out = tmp_path / "out"
    qg = dict(loss="qgface", qgface_queue_size=QUEUE, qgface_stats_init="first_batch", qgface_threshold=0.5)
    cfg_dir = _config(tmp_path, "qg_patch", records, **qg)
    proc = _train_v2(patched, cfg_dir, "qg_patch", tmp_path)
    log = _check_run(proc, out, 1, 2 * STEPS)
    lines = _qgface_lines(log)
    assert any(d["hq"] < 100 for d in lines) and any(d["contrasted"] > 0 for d in lines), lines  # both branches
    assert "qgface_lambda" in log and "qgface_view_scale" in log  # defaults filled in (train_v2 logs cfg)

    ckpt = _load(out / "checkpoint_gpu_0.pt")
    state = ckpt["state_qgface"]
    assert set(state) == QGFACE_STATE
    assert state["queue.features"].shape == (QUEUE, 64)
    filled = int(state["queue.num_filled"])
    assert filled == 2 * STEPS * 2 * BATCH and int(state["queue.ptr"]) == filled
    assert (state["queue.labels"][:filled] >= 0).all() and (state["queue.labels"][filled:] == -1).all()
    assert int(state["partition.num_updates"]) == 2 * STEPS and float(state["partition.std"]) > 0
    assert ckpt["state_dict_softmax_fc"]["weight"].shape == (IDS, 64)
    assert any(k.startswith("state") for k in ckpt["state_optimizer"])

    # resume: one more epoch (upstream restores the LR schedule with its total_iters, so its LR stays 0)
    log_size = len((out / "training.log").read_bytes())
    cfg_dir = _config(tmp_path, "qg_patch_resume", records, **qg, num_epoch=3, resume=True)
    proc = _train_v2(patched, cfg_dir, "qg_patch_resume", tmp_path)
    new_log = _check_run(proc, out, 2 * STEPS + 1, 3 * STEPS, log_offset=log_size)
    assert f"QGFace state restored: queue {filled}/{QUEUE} filled, quality statistics after {2 * STEPS} updates" \
        in new_log, new_log[-3000:]
    state = _load(out / "checkpoint_gpu_0.pt")["state_qgface"]
    assert int(state["queue.num_filled"]) == 3 * STEPS * 2 * BATCH  # continued, not restarted
    assert int(state["partition.num_updates"]) == 3 * STEPS


@needs_git
@pytest.mark.upstream
def test_train_v2_arcface_is_unchanged_by_the_patch(pristine, patched, records, tmp_path):
    """loss="arcface": the patched train_v2 trains exactly as the pristine one (same seeded losses)."""
    logs = []
    for label, root in (("pristine", pristine), ("patched", patched)):
        out = tmp_path / label
        cfg_dir = _config(tmp_path, f"arc_{label}", records, loss="arcface", num_epoch=1, output=str(out))
        proc = _train_v2(root, cfg_dir, f"arc_{label}", tmp_path)
        _check_run(proc, out, 1, STEPS, qgface=False)
        logs.append(_upstream_losses((out / "training.log").read_text()))
    assert logs[0] == logs[1] and len(logs[0]) == STEPS - 1, logs


@needs_git
@pytest.mark.upstream
def test_train_v2_qgface_without_the_plugin_says_what_is_missing(patched, records, tmp_path):
    cfg_dir = _config(tmp_path, "qg_missing", records, loss="qgface")
    block = ("import runpy, sys; sys.modules['qgface_plugin.arcface.hooks'] = None; sys.argv = sys.argv[1:]; "
             "runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = _train_v2(patched, cfg_dir, "qg_missing", tmp_path, prefix=("-c", block))
    assert proc.returncode != 0
    assert "config.loss = 'qgface' needs the qgface_plugin package" in proc.stdout, proc.stdout[-3000:]
    assert not (tmp_path / "out").exists()


@needs_git
@pytest.mark.upstream
def test_train_v2_qgface_two_processes_share_one_queue(patched, records, tmp_path):
    out = tmp_path / "out"
    cfg_dir = _config(tmp_path, "qg_patch_2", records, loss="qgface", num_epoch=1, qgface_queue_size=QUEUE)
    proc = _train_v2(patched, cfg_dir, "qg_patch_2", tmp_path, nproc=2)
    steps = NUM_IMAGES // (2 * BATCH)
    _check_run(proc, out, 1, steps)
    c0, c1 = _load(out / "checkpoint_gpu_0.pt"), _load(out / "checkpoint_gpu_1.pt")
    assert c0["state_dict_softmax_fc"]["weight"].shape == c1["state_dict_softmax_fc"]["weight"].shape == (IDS // 2, 64)
    s0, s1 = c0["state_qgface"], c1["state_qgface"]
    assert int(s0["queue.num_filled"]) == steps * 2 * 2 * BATCH  # every rank holds every rank's rows
    for key in QGFACE_STATE:
        assert torch.equal(s0[key], s1[key]), key


def _past_imports_line(train_v2: Path) -> int:
    """Line number of train_v2's first statement after its imports (upstream's torch version assert)."""
    lines = train_v2.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.startswith("assert torch.__version__"))


@needs_git
@pytest.mark.upstream
def test_train_v2_runs_as_users_run_it(patched, records, tmp_path):
    """``torchrun --nproc_per_node 1 train_v2.py configs/<qgface config>`` from inside the patched copy, in this
    environment (requirements.txt: tensorboardX, no tensorboard package), without tools/run_upstream.py and
    its fallbacks and shims. train_v2 imports ``torch.utils.tensorboard`` (which needs the tensorboard
    package); the patch falls back to tensorboardX's SummaryWriter.

    With CUDA it trains. Without, upstream's train_v2 cannot run at all (NCCL initialised at import time,
    ``torch.cuda.set_device``, ``.cuda()`` calls: the CPU shim of run_upstream.py is what makes it run);
    then the run must get past every import and stop at upstream's first CUDA-only call, and the config
    is loaded the way train_v2 loads it (``get_config``, ``qgface_hooks.configure``) in the same folder.
    """
    name = "qg_as_users_run_it"
    out = tmp_path / "out"
    cfg = dict(loss="qgface", network="mbf", embedding_size=64, rec=str(records), num_classes=IDS,
               num_image=NUM_IMAGES, num_epoch=1, warmup_epoch=0, batch_size=BATCH, lr=0.05, num_workers=0,
               verbose=10 ** 9, frequent=1, val_targets=[], save_all_states=True, output=str(out),
               qgface_queue_size=QUEUE)
    (patched / "configs" / f"{name}.py").write_text(
        "from easydict import EasyDict as edict\nconfig = edict()\n"
        + "".join(f"config.{k} = {v!r}\n" for k, v in cfg.items()))
    env = _env(1)
    env.pop(checkout.ENV_VAR, None)
    proc = run_guarded([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_addr",
                        "127.0.0.1", "--master_port", free_port(), "train_v2.py", f"configs/{name}"],
                       240, cwd=patched, env=env)
    assert "ModuleNotFoundError" not in proc.stdout and "ImportError" not in proc.stdout, proc.stdout[-4000:]
    if torch.cuda.is_available():
        _check_run(proc, out, 1, STEPS)
        assert any((out / "tensorboard").iterdir())
        return
    assert proc.returncode != 0
    frames = [int(n) for n in re.findall(r'File "[^"]*train_v2\.py", line (\d+)', proc.stdout)]
    assert frames and max(frames) > _past_imports_line(patched / "train_v2.py"), proc.stdout[-4000:]
    assert re.search(r"NCCL|CUDA|GPU", proc.stdout), proc.stdout[-4000:]
    load = ("from utils.utils_config import get_config\n"
            "from qgface_plugin.arcface import hooks as qgface_hooks\n"
            f"cfg = get_config('configs/{name}')\n"
            "print('qgface', qgface_hooks.configure(cfg), cfg.qgface_lambda, cfg.qgface_queue_size)\n")
    proc = run_guarded([sys.executable, "-c", load], 120, cwd=patched, env=env)
    assert proc.returncode == 0 and f"qgface True 1.0 {QUEUE}" in proc.stdout, proc.stdout[-4000:]


# ------------------------------------------------------------------------------------- fetch tool

@needs_git
@pytest.mark.skipif(not GIT_DIR_ENV, reason="INSIGHTFACE_GIT_DIR not set: point it at an insightface clone or git "
                                            f"directory that has commit {checkout.PINNED_COMMIT[:12]}")
def test_fetch_tool_applies_the_patches(tmp_path, request):
    dest = tmp_path / "arcface_torch"
    proc = _run([sys.executable, ROOT / "tools" / "fetch_arcface_torch.py", "--source", GIT_DIR_ENV, "--dest", dest],
                tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert proc.stdout.strip().splitlines()[-1] == str(dest)
    record = json.loads((dest / checkout.FETCH_RECORD).read_text())
    assert record["commit"] == checkout.PINNED_COMMIT
    assert [p["name"] for p in record["patches"]] == [p.name for p in PATCHES]
    assert record["patched_files"] == ["lr_scheduler.py", "train_v2.py"]
    assert "qgface_hooks.configure(cfg)" in (dest / "train_v2.py").read_text()
    if upstream_root() is not None:  # the same bytes as git apply gives on the pinned copy
        patched = request.getfixturevalue("patched")
        for rel in record["patched_files"]:
            assert (dest / rel).read_bytes() == (patched / rel).read_bytes(), rel
