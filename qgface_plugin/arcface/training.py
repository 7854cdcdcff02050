"""QGFace (and ArcFace/CosFace baseline) training on arcface_torch's parts: the training loop.

One loop for every ``config.loss``: arcface_torch's record set with QGFace's two-view transform
(:mod:`.loader`), ``backbones.get_model`` (:mod:`.backbone`), ``PartialFC_V2`` (QGFace subclass, :mod:`.partial_fc`), its
warm-up/polynomial LR schedule and ``.bin`` verification (:mod:`.validation`); torch DDP on NCCL (GPU) or
gloo (CPU) (:mod:`.launch`); ``torch.amp`` fp16 with a GradScaler and a skip of non-finite steps on every
rank (:mod:`.optim_step`); per-rank full-state checkpoints at epoch ends and every ``save_every_steps``,
written atomically, and ``model.pt`` in arcface_torch's key layout (:mod:`.checkpoint`); resuming at the
exact step from the newest checkpoint every rank has, also after a torchrun restart (:mod:`.resume`); tensorboardX scalars and a progress line with ETA
(:mod:`.progress`); ``summary.json``. This module holds what ties them together: the run's parts
(:func:`build_training`, :func:`build_scheduler`), one step (:func:`train_step`), the loop (:func:`train`)
and the command line (:func:`main`, ``tools/train.py``).

Launch with ``torchrun --nproc_per_node=N tools/train.py <config>`` or, for one process,
``python tools/train.py <config>``.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from . import checkout, cpu_shim, upstream as upstream_mod
from .backbone import build_backbone
from .. import cli
from ..errors import QGFaceConfigError, QGFaceInputError, QGFaceNonFiniteError
from .checkpoint import restore, save_model
from .config import load_config, parse_overrides
from .device_data import DeviceBatches, stack_views
from .factory import qgface_loss, qgface_margin, threshold_at_step
from .launch import configure_device, seed_everything, setup_distributed, wrap_ddp
from .loader import build_loader
from .optim_step import NonFiniteSteps, optimizer_step
from .partial_fc import qgface_partial_fc
from .progress import Progress, peak_memory
from .resume import Checkpointer, check_fresh_start, clean_partial_writes, find_resume_state
from .validation import load_verification_sets, verify_and_log

__all__ = ["train", "train_step", "build_training", "build_scheduler", "build_parser", "main"]


# ---------------------------------------------------------------------------------------------
# model, loss, optimisation
def build_training(cfg, ns, world, device):
    """Backbone (DDP), Partial FC with the margin, the QGFace loss (or None), optimizer."""
    backbone = build_backbone(ns, cfg.network, cfg.embedding_size, fp16=bool(cfg.fp16))
    backbone = backbone.to(device)
    if cfg.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    backbone = wrap_ddp(backbone, device, world)

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
# the loop
def train_step(images, labels, *, cfg, step, steps_per_epoch, backbone, pfc, criterion, opt, scaler,
               nonfinite, pfc_guard, rank):
    """One training step on device batches: forward, loss, and :func:`optimizer_step` (which skips a
    non-finite step on every rank). Returns the step's statistics (device tensors)."""
    if criterion is not None:  # [B, 2, 3, H, W] -> [2B, 3, H, W]: H views then L views
        images = stack_views(images)
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


def _start(cfg, rank, device, parts, steps_per_epoch, total_step, nonfinite, progress):
    """Where this run starts, ``(epoch, batch, step, common step checkpoints)``: the newest checkpoint that
    every rank has when resuming (``config.resume``: True, or "auto" = if there is one; a torchrun restart
    resumes as "auto"), else ``(0, 0, 0, [])``."""
    clean_partial_writes(cfg.output, rank)
    resume = cfg.resume
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0)
    if restarts and not resume:
        resume = "auto"
        if rank == 0:
            print(f"qgface: torchrun restart {restarts}: resuming from the newest checkpoint", file=sys.stderr)
    if not resume:
        check_fresh_start(cfg.output, rank)
        return 0, 0, 0, []
    found = find_resume_state(cfg, rank, device, steps_per_epoch, total_step)
    if found is None:
        if resume == "auto":
            if rank == 0:
                print(f"qgface: resume='auto': no checkpoint in {cfg.output} yet; starting at step 0", file=sys.stderr)
            return 0, 0, 0, []
        raise QGFaceInputError(
            f"config.resume is set but {cfg.output} holds no checkpoint (checkpoint_gpu_<rank>.pt at epoch ends, "
            "with save_all_states; checkpoint_step<N>_gpu_<rank>.pt every save_every_steps)")
    state, common = found
    epoch, batch, step = restore(state, parts)
    extra = state.get("extra") or {}
    if "nonfinite" in extra:
        nonfinite.load_state_dict(extra["nonfinite"])
    progress.resume_at(step, extra.get("history", []))
    if rank == 0:
        print(f"qgface: resuming at step {step} (epoch {epoch + 1}, batch {batch})", file=sys.stderr, flush=True)
    return epoch, batch, step, common


def train(cfg, root: str | None = None, on_log=None) -> dict:
    """Train with a loaded config (see :func:`qgface_plugin.arcface.config.load_config`); returns the summary.

    ``on_log(step, backbone)``, when given, is called on rank 0 at every logging step (``step % frequent == 0``)
    and after the last step, with the 1-based step count and the backbone module (unwrapped from DDP, in
    training mode: a callback that evaluates must switch it to eval and back, and must not use collectives).
    Its time counts in the run's wall time; ``None`` costs nothing."""
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
    seed_everything(cfg.seed + rank)

    loader = build_loader(cfg, ns, rank, world, device)
    batches = DeviceBatches(loader, device, cfg.num_classes)
    backbone, pfc, criterion, opt = build_training(cfg, ns, world, device)
    images_per_step = cfg.batch_size * world
    steps_per_epoch = cfg.num_image // images_per_step
    total_step = steps_per_epoch * cfg.num_epoch
    warmup_step = steps_per_epoch * cfg.warmup_epoch
    if total_step <= 0:
        raise QGFaceConfigError(f"num_image={cfg.num_image} and batch_size={cfg.batch_size} x {world} ranks give no step")
    sched = build_scheduler(cfg, ns, opt, warmup_step, total_step, steps_per_epoch)
    amp = cfg.fp16 and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", growth_interval=100, enabled=amp)

    parts = (backbone, pfc, criterion, opt, sched, scaler)
    nonfinite = NonFiniteSteps(cfg.max_nonfinite_steps)
    progress = Progress(rank, total_step, cfg.num_epoch, cfg.frequent, images_per_step, None,
                        qgface=criterion is not None)
    start_epoch, start_batch, step, confirmed = _start(cfg, rank, device, parts, steps_per_epoch, total_step,
                                                       nonfinite, progress)
    checkpointer = Checkpointer(cfg, rank, world, parts, confirmed)
    val_sets = load_verification_sets(cfg, ns) if rank == 0 else {}
    writer = None
    if rank == 0:
        from tensorboardX import SummaryWriter
        writer = progress.writer = SummaryWriter(str(output / "tensorboard"))

    step_parts = dict(cfg=cfg, steps_per_epoch=steps_per_epoch, backbone=backbone, pfc=pfc, criterion=criterion,
                      opt=opt, scaler=scaler, nonfinite=nonfinite, rank=rank,
                      pfc_guard=cpu_shim.partial_fc_cpu_shim if device.type != "cuda" else contextlib.nullcontext)
    val_results, stats = {}, None
    t_start = time.time()
    end_epoch = min(cfg.num_epoch, cfg.stop_after_epoch or cfg.num_epoch)
    stop_step = min(total_step, cfg.stop_after_steps or total_step)

    def extra():
        return {"nonfinite": nonfinite.state_dict(), "history": progress.history}

    for epoch in range(start_epoch, end_epoch):
        if step >= stop_step:
            break
        loader.sampler.set_epoch(epoch)
        loader.dataset.set_epoch(epoch)
        batch = start_batch if epoch == start_epoch else 0
        loader.sampler.start_at(batch * cfg.batch_size)
        epoch_batches = batch + len(loader)
        batch_iter, t_wait = iter(batches), time.perf_counter()
        for images, labels in batch_iter:
            data_wait = time.perf_counter() - t_wait
            stats = train_step(images, labels, step=step, **step_parts)
            sched.step()
            step, batch = step + 1, batch + 1
            progress.step(step, epoch, stats, opt.param_groups[0]["lr"], nonfinite.total, data_wait)
            if on_log is not None and rank == 0 and (step % cfg.frequent == 0 or step == total_step):
                on_log(step, backbone.module)
            if val_sets and step % cfg.verbose == 0:
                val_results = verify_and_log(val_sets, ns, backbone, device, writer, step)
            if cfg.verbose and step % cfg.verbose == 0:
                dist.barrier()
            stop = step >= stop_step
            if batch < epoch_batches and (checkpointer.due(step) or stop):
                checkpointer.save((epoch, batch, step), extra(), epoch_end=False)  # a stop part-way: resumable
            if stop:
                break
            t_wait = time.perf_counter()
        if batch >= epoch_batches or step >= total_step:  # the epoch ended (not a stop part-way)
            if cfg.save_all_states:
                checkpointer.save((epoch + 1, 0, step), extra(), epoch_end=True)
        if rank == 0:
            save_model(backbone, output)
        dist.barrier()
    last = {k: float(v) for k, v in stats.items()} if stats is not None else progress.last
    if val_sets and step % cfg.verbose != 0:
        val_results = verify_and_log(val_sets, ns, backbone, device, writer, step)
    summary = {
        "config": cfg.config_name, "loss_name": cfg.loss, "network": cfg.network, "world_size": world,
        "device": str(device), "steps": step, "epochs": end_epoch,
        "num_epoch": cfg.num_epoch, "final": last, **progress.summary(),
        "images_per_step": images_per_step,
        "rows_per_step": images_per_step * (2 if criterion is not None else 1),
        **peak_memory(device), "wall_s": round(time.time() - t_start, 1),
        "verification": val_results, "model": str(output / "model.pt"), "output": str(output),
        "nonfinite_steps": nonfinite.summary(), "failed_checkpoints": checkpointer.failed, "grad_scale": scaler.get_scale() if amp else None,
        "history": progress.history,
    }
    if rank == 0:
        with open(output / "summary.json", "w") as f:
            json.dump(summary, f, indent=1)
        writer.close()
    dist.barrier()
    return summary


# ---------------------------------------------------------------------------------------------
# the command line (tools/train.py)
def build_parser():
    parser = cli.parser(
        "Train QGFace (or an ArcFace/CosFace baseline) on arcface_torch's parts. "
        "Launch with torchrun for several processes.", raw_description=False)
    parser.add_argument("config", help="config file, or the name of one in recognition_configs/")
    parser.add_argument("overrides", nargs="*",
                        help="key=value config overrides (Python literals; a bare word is a string); default: none")
    parser.add_argument("--output", help="output folder (default: config.output, else work_dirs/<config name>)")
    parser.add_argument("--resume", action="store_true", help="continue from <output>/checkpoint_gpu_<rank>.pt")
    parser.add_argument("--arcface-root", help="arcface_torch folder (default: $ARCFACE_TORCH_ROOT or third_party/)")
    return parser


def main(argv=None) -> int:
    """``tools/train.py``: exit 0 when trained, 2 for a bad config or bad data, 1 when training diverged."""
    args = build_parser().parse_intermixed_args(argv)  # key=value overrides may follow the options
    try:
        overrides = parse_overrides(args.overrides)
        if args.output:
            overrides["output"] = args.output
        if args.resume:
            overrides["resume"] = True
        cfg = load_config(args.config, overrides)
        checkout.find_root(args.arcface_root)
    except QGFaceConfigError as exc:
        return cli.error(exc)
    try:
        train(cfg, args.arcface_root)
    except (QGFaceConfigError, QGFaceInputError) as exc:
        return cli.error(exc)
    except QGFaceNonFiniteError as exc:
        return cli.error(exc, code=cli.EXIT_FAILED)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return cli.EXIT_OK
