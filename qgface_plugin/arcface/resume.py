"""Where a run continues from, and which checkpoints it keeps: the same decision on every rank.

Every rank writes its own files (on node-local disks the ranks of one node see only theirs), so nothing
here trusts one rank's view. :func:`find_resume_state` gathers each rank's list of checkpoint steps,
takes the newest step present on every rank, and loads it; a file that turns out truncated or corrupt is
reported by name (on the rank that has it) and every rank falls back to the previous common step. A
checkpoint this run cannot continue (another world size, network, config …) stops every rank with the
reason. :class:`Checkpointer` writes step checkpoints (``config.save_every_steps``) and epoch ends, and
deletes old ones only after every rank has written the new one, so a crash or a full disk on one rank
while saving never leaves the ranks without a common checkpoint; a failed write is a warning, and training
goes on. A write killed half-way leaves a temporary file, never a torn checkpoint under a checkpoint's
name; :func:`clean_partial_writes` removes those at start-up.

The collectives here run at start-up and at save steps only.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch.distributed as dist

from ..errors import QGFaceConfigError, QGFaceInputError
from .checkpoint import (CheckpointUnreadable, check_fits, checkpoint_path, read_checkpoint, save_checkpoint,
                         step_checkpoint_path, step_of)

__all__ = ["local_checkpoints", "find_resume_state", "check_fresh_start", "clean_partial_writes", "Checkpointer"]


def _gather(obj) -> list:
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _say(rank: int, text: str) -> None:
    print(f"qgface: rank {rank}: {text}", file=sys.stderr, flush=True)


def _step_files(output, rank) -> dict[int, Path]:
    found = {}
    for path in Path(output).glob(f"checkpoint_step*_gpu_{rank}.pt"):
        step = step_of(path, rank)
        if step is not None:
            found[step] = path
    return found


def local_checkpoints(output, rank: int) -> tuple[dict[int, Path], list[str]]:
    """This rank's checkpoints by step (step files and the epoch-end file), and the files it cannot read."""
    found, problems = _step_files(output, rank), []
    epoch_file = checkpoint_path(output, rank)
    if epoch_file.is_file():
        try:
            found.setdefault(int(read_checkpoint(epoch_file, mmap=True)["global_step"]), epoch_file)
        except CheckpointUnreadable as exc:
            problems.append(str(exc))
    return found, problems


def clean_partial_writes(output, rank: int) -> int:
    """Delete this rank's temporary files left by a write that was killed (they never replaced a checkpoint)."""
    patterns = [f".checkpoint*_gpu_{rank}.pt.*.tmp"] + ([".model.pt.*.tmp"] if rank == 0 else [])
    removed = [p for pattern in patterns for p in Path(output).glob(pattern)]
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        _say(rank, f"removed {len(removed)} partly written file(s) of a killed run in {output}")
    return len(removed)


def check_fresh_start(output, rank: int) -> None:
    """A run that does not resume must not mix its step checkpoints with an earlier run's.

    Raises:
        QGFaceConfigError (on every rank): some rank's ``output`` holds step checkpoints.
    """
    steps = _gather(sorted(_step_files(output, rank)))
    if any(steps):
        newest = max(max(s) for s in steps if s)
        raise QGFaceConfigError(
            f"{output} holds step checkpoints of an earlier run (newest: step {newest}). Continue it with --resume "
            "(or config.resume='auto'), or give this run another output folder.")


def _listing(steps_by_rank) -> str:
    return "; ".join(f"rank {r}: " + (", ".join(map(str, s)) if s else "none") for r, s in enumerate(steps_by_rank))


def find_resume_state(cfg, rank: int, device, steps_per_epoch: int, total_step: int):
    """The newest checkpoint every rank has and can read, loaded on ``device``, or None if no rank has one.

    Returns:
        ``(state, steps)``: this rank's loaded state and the steps common to every rank (oldest first), or None.

    Raises:
        QGFaceConfigError: the checkpoint does not fit this run (:func:`~.checkpoint.check_fits`).
        QGFaceInputError: the ranks have checkpoints but no step is readable on all of them.
    """
    world = dist.get_world_size()
    found, problems = local_checkpoints(cfg.output, rank)
    for text in problems:
        _say(rank, f"{text}; not used")
    everyone = _gather(sorted(found))
    if not any(everyone) and not any(_gather(bool(problems))):
        return None
    common = sorted(set.intersection(*map(set, everyone)))
    for step in reversed(common):
        verdict = ("ok", "")
        try:
            state = read_checkpoint(found[step], device)
            differ = check_fits(state, found[step], cfg, world, steps_per_epoch, total_step)
            if differ and rank == 0:
                _say(rank, f"resuming with changed config keys {differ} (resume_check_config=False)")
        except CheckpointUnreadable as exc:
            state, verdict = None, ("unreadable", str(exc))
            _say(rank, f"{exc}; every rank resumes from an earlier checkpoint")
        except QGFaceConfigError as exc:
            state, verdict = None, ("refused", str(exc))
        verdicts = _gather(verdict)
        refused = [text for kind, text in verdicts if kind == "refused"]
        if refused:
            raise QGFaceConfigError(refused[0])
        if all(kind == "ok" for kind, _ in verdicts):
            return state, common[:common.index(step) + 1]
    raise QGFaceInputError(
        f"config.resume is set but no checkpoint step in {cfg.output} is complete and readable on every rank "
        f"({_listing(everyone)}). A checkpoint is per rank: resuming needs the world size that wrote it.")


class Checkpointer:
    """Writes this rank's checkpoints and keeps the last ``config.keep_checkpoints`` step checkpoints.

    Args:
        cfg: the run's config (``output``, ``save_every_steps``, ``keep_checkpoints``, ``save_all_states``).
        rank, world: this process's.
        parts: ``(backbone, pfc, criterion, opt, sched, scaler)``.
        confirmed: steps of the step checkpoints that every rank has (a resumed run's, oldest first).
    """

    def __init__(self, cfg, rank: int, world: int, parts, confirmed=()):
        self.cfg, self.rank, self.world, self.parts = cfg, rank, world, parts
        self.every, self.keep = int(cfg.get("save_every_steps") or 0), int(cfg.get("keep_checkpoints", 2))
        present = _step_files(cfg.output, rank)
        self.confirmed = [s for s in confirmed if s in present]
        self.failed: list[str] = []

    def due(self, step: int) -> bool:
        """Whether step ``step`` (1-based) is one of ``save_every_steps`` (an epoch end saves its own file)."""
        return self.every > 0 and step % self.every == 0

    def save(self, position, extra, epoch_end: bool) -> bool:
        """Write the checkpoint at ``position = (epoch, batch, step)`` on every rank; True if every rank wrote it.

        A failed write (disk full, …) is reported on its rank; the earlier checkpoints are kept.
        """
        step = position[2]
        path = (checkpoint_path(self.cfg.output, self.rank) if epoch_end
                else step_checkpoint_path(self.cfg.output, self.rank, step))
        try:
            save_checkpoint(path, self.cfg, self.rank, self.world, position, self.parts, extra)
            ok = True
        except OSError as exc:
            ok = False
            _say(self.rank, f"could not write {path} ({exc.strerror or exc}); the earlier checkpoints are kept "
                            "and training goes on")
        written = _gather(ok)
        if not all(written):
            self.failed.append(f"step {step}: ranks {[r for r, w in enumerate(written) if not w]}")
            return False
        self.confirmed = [] if epoch_end else [*self.confirmed, step]
        self._prune()
        return True

    def _prune(self) -> None:
        keep = set(self.confirmed[-self.keep:])
        for step, path in _step_files(self.cfg.output, self.rank).items():
            if step not in keep:
                path.unlink(missing_ok=True)
