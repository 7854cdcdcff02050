"""QGFace (and ArcFace/CosFace baseline) training on arcface_torch's parts.

One loop for every ``config.loss``: arcface_torch's ``MXFaceDataset`` (with QGFace's two-view
transform), ``backbones.get_model``, ``PartialFC_V2`` (QGFace subclass), its warm-up/polynomial LR
schedule and ``.bin`` verification; torch DDP on NCCL (GPU) or gloo (CPU); ``torch.amp`` fp16 with
a GradScaler; per-rank full-state checkpoints written atomically; tensorboardX scalars; a progress
line with ETA; ``model.pt`` in arcface_torch's key layout; ``summary.json``.

Launch with ``torchrun --nproc_per_node=N tools/train.py <config>`` or, for one process,
``python tools/train.py <config>``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from . import upstream as upstream_mod
from .config import load_config
from ..errors import QGFaceConfigError, QGFaceInputError, QGFaceNonFiniteError
from .factory import (load_qgface_state_dict, qgface_loss, qgface_margin, qgface_state_dict,
                      threshold_at_step, two_view_transform)
from .device_data import DeviceBatches
from .optim_step import NonFiniteSteps, optimizer_step
from .partial_fc import qgface_partial_fc
from .progress import Progress, peak_memory
from .records import check_record_dataset
from ..views import FlipTransform

__all__ = ["train", "setup_distributed", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "qgface_plugin/checkpoint-v1"
CHECKPOINT_PARTS = ("state_dict_backbone", "state_dict_softmax_fc", "state_optimizer", "state_lr_scheduler",
                    "state_scaler", "state_qgface", "rng")
log = logging.getLogger("qgface_plugin.train")


# ---------------------------------------------------------------------------------------------
# distributed set-up
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_distributed():
    """Initialise the process group (torchrun's env, else a 1-process group); returns (rank, local_rank, world, device)."""
    cuda = torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            dist.init_process_group(backend, init_method="env://", timeout=timedelta(minutes=30))
        else:  # Partial FC needs a process group even for one process
            dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}",
                                    rank=0, world_size=1, timeout=timedelta(minutes=30))
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return rank, local_rank, world, device


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    """Every RNG a step draws from, as tensors and primitives (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


# ---------------------------------------------------------------------------------------------
# data
class SyntheticImages(torch.utils.data.Dataset):
    """``config.rec = "synthetic"``: random images through the real transform, for speed runs.

    arcface_torch's own synthetic set repeats one image with label 1, which makes the backbone's
    final BatchNorm output collapse (NaN losses after the first update). Here a pool of random
    RGB uint8 images cycles with labels ``i % num_classes``, and each goes through the run's
    transform (two views for QGFace), so throughput includes the augmentation cost.
    """

    def __init__(self, num_image, num_classes, transform, pool=256, seed=0):
        rng = np.random.default_rng(seed)
        self.pool = rng.integers(0, 256, size=(pool, 112, 112, 3), dtype=np.uint8)
        self.num_image, self.num_classes, self.transform = num_image, num_classes, transform

    def __len__(self):
        return self.num_image

    def __getitem__(self, i):
        return self.transform(self.pool[i % len(self.pool)]), torch.tensor(i % self.num_classes)


def record_dataset(cfg, ns, rank):
    """The record set as arcface_torch's ``MXFaceDataset`` (``record_reader="mxnet"``) or this
    package's mxnet-free :class:`~qgface_plugin.formats.recordio.RecordDataset` (``"python"``: same order,
    labels and pixels); ``"auto"`` takes mxnet's when it imports."""
    reader = cfg.record_reader
    if reader == "auto":
        try:
            from ..utils import import_mxnet
            import_mxnet()
            reader = "mxnet"
        except ImportError:
            reader = "python"
    if reader == "mxnet":
        return ns.MXFaceDataset(root_dir=cfg.rec, local_rank=rank)
    from ..formats.recordio import RecordDataset
    return RecordDataset(root_dir=cfg.rec, local_rank=rank)


def build_loader(cfg, ns, rank, world, device):
    """DataLoader over the record set (two views for QGFace; uint8 with ``loader_uint8``) with a distributed sampler."""
    # uint8 batches normalised on the device (DeviceBatches), or arcface_torch's float pipeline
    output = "uint8" if cfg.loader_uint8 else "float"
    transform = two_view_transform(cfg, output=output) if cfg.loss == "qgface" else FlipTransform(output=output)
    if cfg.rec == "synthetic":
        dataset = SyntheticImages(cfg.num_image, cfg.num_classes, transform, seed=cfg.seed)
    else:
        check_record_dataset(cfg.rec, cfg.num_classes)
        dataset = record_dataset(cfg, ns, rank)
        if cfg.loss == "qgface" or cfg.loader_uint8:  # else upstream's own flip + normalise
            dataset.transform = transform
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                                  seed=cfg.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda", drop_last=True, persistent_workers=False)
    if len(loader) == 0:
        raise QGFaceConfigError(
            f"{len(dataset)} images over {world} ranks give no full batch of {cfg.batch_size}: lower batch_size")
    return loader


# ---------------------------------------------------------------------------------------------
# model, loss, optimisation
def _ddp_static_graph_no_buffer_sync() -> dict:
    """DDP arguments: a static graph, and BatchNorm statistics not synchronised at each forward.

    Upstream's train_v2 passes ``broadcast_buffers=False, find_unused_parameters=True`` and then calls
    ``_set_static_graph()``. The loss reaches every parameter at every step (the QGFace loss and the
    Partial FC keep a zero term that touches all of them), so the graph is static and there is no
    unused parameter to look for: ``static_graph=True`` alone (with it DDP ignores
    ``find_unused_parameters`` and warns about it). torch >= 2.13 renamed ``broadcast_buffers`` to
    ``forward_sync_buffers`` and warns about the old name; the new one also broadcasts the buffers once
    at construction, which changes nothing here: the backbone's buffers are BatchNorm's initial
    statistics, the same on every rank (a resumed run loads its checkpoint after construction).
    """
    import inspect
    kwargs = {"static_graph": True}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        kwargs["forward_sync_buffers"] = False
    else:
        kwargs["broadcast_buffers"] = False
    return kwargs


def build_training(cfg, ns, world, device):
    """Backbone (DDP), Partial FC with the margin, the QGFace loss (or None), optimizer."""
    backbone = ns.get_model(cfg.network, dropout=0.0, fp16=bool(cfg.fp16), num_features=cfg.embedding_size)
    backbone = backbone.to(device)
    if cfg.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    backbone = DistributedDataParallel(
        backbone, device_ids=[device.index] if device.type == "cuda" else None, bucket_cap_mb=16,
        **_ddp_static_graph_no_buffer_sync())
    if world > 1:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import fp16_compress_hook
        backbone.register_comm_hook(None, fp16_compress_hook)

    if cfg.loss == "qgface":
        margin = qgface_margin(cfg)
    else:
        margin = ns.CombinedMarginLoss(64, *cfg.margin_list, cfg.interclass_filtering_threshold)
    pfc_module = sys.modules[ns.PartialFC_V2.__module__]
    pfc = qgface_partial_fc(pfc_module)(margin, cfg.embedding_size, cfg.num_classes, cfg.sample_rate,
                                        False, hq_mode=cfg.qgface_hq_mode).to(device).train()
    # labels are checked on the host before each copy (DeviceBatches): no per-step check on the device
    criterion = qgface_loss(cfg, pfc, check_labels=False).to(device).train() if cfg.loss == "qgface" else None
    groups = [{"params": backbone.parameters()}, {"params": pfc.parameters()}]  # PFC group last, as upstream
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return backbone, pfc, criterion, opt


class _StepWarmup:
    """LR factor of the "step" schedule: linear warm-up, then × gamma at each milestone (in steps)."""

    def __init__(self, warmup_step, milestones, gamma):
        self.warmup_step, self.milestones, self.gamma = warmup_step, sorted(milestones), gamma

    def __call__(self, it):
        warm = min(1.0, (it + 1) / self.warmup_step) if self.warmup_step > 0 else 1.0
        return warm * self.gamma ** sum(it >= m for m in self.milestones)


def build_scheduler(cfg, ns, opt, warmup_step, total_step, steps_per_epoch):
    """Upstream's PolynomialLRWarmup (config.lr_schedule="polynomial") or a warm-up + step schedule."""
    if cfg.lr_schedule == "step":
        milestones = [int(e * steps_per_epoch) for e in cfg.lr_steps]
        return torch.optim.lr_scheduler.LambdaLR(opt, _StepWarmup(warmup_step, milestones, cfg.lr_gamma))
    return ns.make_scheduler(opt, warmup_step, total_step)


# ---------------------------------------------------------------------------------------------
# checkpoints
def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def checkpoint_path(output: str | Path, rank: int) -> Path:
    return Path(output) / f"checkpoint_gpu_{rank}.pt"


def save_checkpoint(cfg, rank, world, epoch, step, backbone, pfc, criterion, opt, sched, scaler):
    state = {
        "format": CHECKPOINT_FORMAT, "parts": list(CHECKPOINT_PARTS), "world_size": world, "rank": rank,
        "embedding_size": cfg.embedding_size, "num_classes": cfg.num_classes, "network": cfg.network,
        "loss": cfg.loss, "epoch": epoch, "global_step": step,
        "state_dict_backbone": backbone.module.state_dict(), "state_dict_softmax_fc": pfc.state_dict(),
        "state_optimizer": opt.state_dict(), "state_lr_scheduler": sched.state_dict(),
        "state_scaler": scaler.state_dict(),
        "state_qgface": qgface_state_dict(criterion) if criterion is not None else {},
        "rng": _rng_state(),
    }
    _atomic_save(state, checkpoint_path(cfg.output, rank))


def load_checkpoint(cfg, rank, world, device, backbone, pfc, criterion, opt, sched, scaler):
    path = checkpoint_path(cfg.output, rank)
    if not path.is_file():
        raise QGFaceInputError(f"config.resume is set but {path} does not exist (save_all_states writes it)")
    state = torch.load(path, map_location=device, weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise QGFaceInputError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint (format {state.get('format')!r})")
    for key, now in (("world_size", world), ("embedding_size", cfg.embedding_size),
                     ("num_classes", cfg.num_classes), ("network", cfg.network), ("loss", cfg.loss)):
        if state[key] != now:
            hint = (" Partial FC shards the class centres per rank, so resuming needs the same number of "
                    "processes; to change it, start a new run from model.pt." if key == "world_size" else "")
            raise QGFaceConfigError(f"{path} was written with {key}={state[key]!r} but this run has {now!r}.{hint}")
    missing = [p for p in CHECKPOINT_PARTS if p not in state]
    if missing:
        raise QGFaceInputError(f"{path} lacks {missing}")
    backbone.module.load_state_dict(state["state_dict_backbone"])
    pfc.load_state_dict(state["state_dict_softmax_fc"])
    opt.load_state_dict(state["state_optimizer"])
    sched.load_state_dict(state["state_lr_scheduler"])
    scaler.load_state_dict(state["state_scaler"])
    if criterion is not None:
        load_qgface_state_dict(criterion, state["state_qgface"])
    _set_rng_state(state["rng"])
    return state["epoch"], state["global_step"]


# ---------------------------------------------------------------------------------------------
# verification
class _OnDevice(torch.nn.Module):
    """Feeds upstream verification's CPU float64 batches to a model on any device."""

    def __init__(self, model, device):
        super().__init__()
        self.model, self.device = model, device

    def forward(self, x):
        return self.model(x.to(self.device, torch.float32))


def load_verification_sets(cfg, ns):
    sets = {}
    if cfg.rec == "synthetic" and cfg.val_targets:
        raise QGFaceConfigError("config.rec = 'synthetic' has no verification sets: set val_targets = []")
    for name in cfg.val_targets:
        path = Path(cfg.rec) / f"{name}.bin"
        if not path.is_file():
            raise QGFaceInputError(f"verification set {path} (config.val_targets) does not exist")
        sets[name] = ns.verification.load_bin(str(path), (112, 112))
    return sets


def run_verification(sets, ns, backbone, device, batch_size=64):
    """10-fold accuracy (flip-fused) per set; returns {name: {accuracy, std, xnorm}}."""
    results = {}
    model = backbone.module
    was_training = model.training
    model.eval()
    with torch.no_grad(), contextlib.redirect_stdout(open(os.devnull, "w")):
        for name, data in sets.items():
            batch = min(batch_size, data[0][0].shape[0])  # upstream's last batch reaches back batch_size rows
            _, _, acc, std, xnorm, _ = ns.verification.test(data, _OnDevice(model, device), batch, 10)
            results[name] = {"accuracy": float(acc), "std": float(std), "xnorm": float(xnorm)}
    model.train(was_training)
    return results


# ---------------------------------------------------------------------------------------------
def configure_device(cfg, device) -> None:
    """Upstream's cuDNN autotuning, and TF32 matrix products/convolutions (``config.tf32``) on GPUs."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(cfg.tf32)


def train_step(images, labels, *, cfg, step, steps_per_epoch, backbone, pfc, criterion, opt, scaler,
               nonfinite, pfc_guard, rank):
    """One training step on device batches: forward, loss, and :func:`optimizer_step` (which skips a
    non-finite step on every rank). Returns the step's statistics (device tensors)."""
    if criterion is not None:  # [B, 2, 3, H, W]: H views then L views
        images = torch.cat([images[:, 0], images[:, 1]])
    if cfg.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with pfc_guard():
        embeddings = backbone(images)
        if criterion is not None:
            b = threshold_at_step(cfg, step, steps_per_epoch)
            loss, stats = criterion(embeddings.float(), labels, threshold=b)
        else:
            loss = pfc(embeddings.float(), labels.clone())
            stats = {"loss": loss.detach()}
    skipped = optimizer_step(loss, opt, scaler, backbone.parameters(), cfg.clip_grad_norm, pfc.parameters())
    if skipped and rank == 0:
        print(f"qgface: step {step + 1}: NaN/inf loss or gradient on some rank; step skipped on "
              f"every rank ({nonfinite.consecutive + 1} in a row, limit {nonfinite.limit})",
              file=sys.stderr, flush=True)
    nonfinite.record(skipped, step + 1)
    return stats


def train(cfg, root: str | None = None) -> dict:
    """Train with a loaded config (see :func:`qgface_plugin.arcface.config.load_config`); returns the summary."""
    rank, local_rank, world, device = setup_distributed()
    ns = upstream_mod.load(root)
    if device.type != "cuda" and cfg.fp16:
        if rank == 0:
            print("qgface: fp16 needs a GPU; training in fp32 on the CPU", file=sys.stderr)
        cfg.fp16 = False
    configure_device(cfg, device)
    output = Path(cfg.output)
    # every rank: each writes its checkpoint_gpu_<rank>.pt here, and on node-local disks (multi-node) the
    # other nodes' folders are not rank 0's; config.json, logs, model.pt and summary.json are rank 0's only
    output.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        with open(output / "config.json", "w") as f:
            json.dump({k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}, f, indent=1, default=str)
    dist.barrier()
    _seed_everything(cfg.seed + rank)

    loader = build_loader(cfg, ns, rank, world, device)
    batches = DeviceBatches(loader, device, cfg.num_classes)
    backbone, pfc, criterion, opt = build_training(cfg, ns, world, device)
    steps_per_epoch = cfg.num_image // (cfg.batch_size * world)
    total_step = steps_per_epoch * cfg.num_epoch
    warmup_step = steps_per_epoch * cfg.warmup_epoch
    if total_step <= 0:
        raise QGFaceConfigError(f"num_image={cfg.num_image} and batch_size={cfg.batch_size} x {world} ranks give no step")
    sched = build_scheduler(cfg, ns, opt, warmup_step, total_step, steps_per_epoch)
    amp = cfg.fp16 and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", growth_interval=100, enabled=amp)

    start_epoch, step = 0, 0
    if cfg.resume:
        start_epoch, step = load_checkpoint(cfg, rank, world, device, backbone, pfc, criterion, opt, sched, scaler)
    val_sets = load_verification_sets(cfg, ns) if rank == 0 else {}
    writer = None
    if rank == 0:
        from tensorboardX import SummaryWriter
        writer = SummaryWriter(str(output / "tensorboard"))

    nonfinite = NonFiniteSteps(cfg.max_nonfinite_steps)
    progress = Progress(rank, total_step, cfg.num_epoch, cfg.frequent, cfg.batch_size * world, writer,
                        qgface=criterion is not None)
    step_parts = dict(cfg=cfg, steps_per_epoch=steps_per_epoch, backbone=backbone, pfc=pfc, criterion=criterion,
                      opt=opt, scaler=scaler, nonfinite=nonfinite, rank=rank,
                      pfc_guard=upstream_mod.partial_fc_cpu_shim if device.type != "cuda" else contextlib.nullcontext)
    val_results, stats = {}, None
    t_start = time.time()
    end_epoch = min(cfg.num_epoch, cfg.stop_after_epoch or cfg.num_epoch)
    transform = getattr(loader.dataset, "transform", None)
    for epoch in range(start_epoch, end_epoch):
        loader.sampler.set_epoch(epoch)
        if hasattr(transform, "reseed"):  # main-process augmentation stream follows the (checkpointed) torch RNG
            transform.reseed(int(torch.randint(2 ** 62, (1,))))
        batch_iter, t_wait = iter(batches), time.perf_counter()
        for images, labels in batch_iter:
            data_wait = time.perf_counter() - t_wait
            if step >= total_step:
                break
            stats = train_step(images, labels, step=step, **step_parts)
            sched.step()
            step += 1
            progress.step(step, epoch, stats, opt.param_groups[0]["lr"], nonfinite.total, data_wait)
            t_wait = time.perf_counter()
            if val_sets and step % cfg.verbose == 0:
                val_results = _verify_and_log(val_sets, ns, backbone, device, writer, step)
            if cfg.verbose and step % cfg.verbose == 0:
                dist.barrier()
        if cfg.save_all_states:
            save_checkpoint(cfg, rank, world, epoch + 1, step, backbone, pfc, criterion, opt, sched, scaler)
        if rank == 0:
            _atomic_save(backbone.module.state_dict(), output / "model.pt")
        dist.barrier()
    last = {k: float(v) for k, v in stats.items()} if stats is not None else progress.last
    if val_sets and step % cfg.verbose != 0:
        val_results = _verify_and_log(val_sets, ns, backbone, device, writer, step)
    summary = {
        "config": cfg.config_name, "loss_name": cfg.loss, "network": cfg.network, "world_size": world,
        "device": str(device), "steps": step, "epochs": end_epoch,
        "num_epoch": cfg.num_epoch, "final": last, **progress.summary(),
        "images_per_step": cfg.batch_size * world,
        "rows_per_step": cfg.batch_size * world * (2 if criterion is not None else 1),
        **peak_memory(device), "wall_s": round(time.time() - t_start, 1),
        "verification": val_results, "model": str(output / "model.pt"), "output": str(output),
        "nonfinite_steps": nonfinite.summary(), "grad_scale": scaler.get_scale() if amp else None,
        "history": progress.history,
    }
    if rank == 0:
        with open(output / "summary.json", "w") as f:
            json.dump(summary, f, indent=1)
        writer.close()
    dist.barrier()
    return summary


def _verify_and_log(val_sets, ns, backbone, device, writer, step):
    results = run_verification(val_sets, ns, backbone, device)
    for name, r in results.items():
        print(f"  verification {name}: accuracy {100 * r['accuracy']:.2f}% ± {100 * r['std']:.2f} "
              f"(xnorm {r['xnorm']:.2f}) at step {step}", flush=True)
        writer.add_scalar(f"val/{name}", r["accuracy"], step)
    return results


def main(argv=None) -> int:
    import argparse
    from .config import parse_overrides

    parser = argparse.ArgumentParser(
        description="Train QGFace (or an ArcFace/CosFace baseline) on arcface_torch's parts. "
                    "Launch with torchrun for several processes.")
    parser.add_argument("config", help="config file, or the name of one in recognition_configs/")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (Python literals)")
    parser.add_argument("--output", help="output folder (overrides config.output)")
    parser.add_argument("--resume", action="store_true", help="continue from <output>/checkpoint_gpu_<rank>.pt")
    parser.add_argument("--arcface-root", help="arcface_torch folder (default: $ARCFACE_TORCH_ROOT or third_party/)")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.overrides)
    if args.output:
        overrides["output"] = args.output
    if args.resume:
        overrides["resume"] = True
    try:
        cfg = load_config(args.config, overrides)
        upstream_mod.find_root(args.arcface_root)
    except QGFaceConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        train(cfg, args.arcface_root)
    except (QGFaceConfigError, QGFaceInputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except QGFaceNonFiniteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0
