"""Rank 0's view of a training run: the progress line, tensorboard scalars, history, speed, memory.

:class:`Progress` is called after every step on every rank and does its work only on rank 0 and
only every ``frequent`` steps (and at the last step): that is where the step's statistics are read
from the device, so a step that is not logged costs no device sync here.
"""
from __future__ import annotations

import resource
import statistics
import sys
import time

import torch

__all__ = ["Progress", "peak_memory"]


def format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def peak_memory(device: torch.device) -> dict:
    """Peak memory of this process: ``max_memory_allocated`` on CUDA, peak RSS elsewhere (bytes)."""
    if device.type == "cuda":
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)),
                "memory_kind": "cuda_max_memory_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_memory_bytes": int(rss if sys.platform == "darwin" else rss * 1024), "memory_kind": "peak_rss"}


class Progress:
    """Progress line, tensorboard scalars and history every ``frequent`` steps on rank 0.

    Args:
        rank, total_step, num_epoch, frequent: the run's.
        images_per_step: images of all ranks per step (for images/s and the ETA).
        writer: a tensorboardX ``SummaryWriter`` (rank 0) or None.
        qgface: add the QGFace terms (cls, con, HQ fraction, b) to the line.
    """

    def __init__(self, rank, total_step, num_epoch, frequent, images_per_step, writer=None, qgface=True):
        self.rank, self.total_step, self.num_epoch, self.frequent = rank, total_step, num_epoch, frequent
        self.images_per_step, self.writer, self.qgface = images_per_step, writer, qgface
        self.history, self.rates, self.step_times, self.data_waits, self.last = [], [], [], [], {}
        self._t_window, self._steps_window, self._wait_window = time.time(), 0, 0.0
        self.start_step = 0

    def resume_at(self, step: int, history) -> None:
        """A resumed run: continue the history (rank 0's, from the checkpoint) after ``step`` steps."""
        self.start_step, self.history = int(step), [dict(h) for h in history]

    def step(self, step: int, epoch: int, stats: dict | None, lr: float, skipped_total: int = 0,
             data_wait: float = 0.0) -> None:
        """After step ``step`` (1-based count of steps taken) of 0-based ``epoch``; ``data_wait``:
        seconds this step waited for its batch."""
        self._steps_window += 1
        self._wait_window += data_wait
        if self.rank != 0 or not (step % self.frequent == 0 or step == self.total_step):
            return
        self.last = {k: float(v) for k, v in (stats or {}).items()}  # the device syncs, when logging only
        now = time.time()
        elapsed = max(now - self._t_window, 1e-9)
        rate = self._steps_window * self.images_per_step / elapsed
        if step > self.start_step + self.frequent:  # the first window includes start-up
            self.rates.append(rate)
            self.step_times.append(elapsed / self._steps_window)
            self.data_waits.append(self._wait_window / self._steps_window)
        self._t_window, self._steps_window, self._wait_window = now, 0, 0.0
        eta = (self.total_step - step) * self.images_per_step / max(rate, 1e-9)
        parts = [f"epoch {epoch + 1}/{self.num_epoch}", f"step {step}/{self.total_step}",
                 f"loss {self.last.get('loss', float('nan')):.3f}"]
        if self.qgface:
            parts += [f"cls {self.last['loss_cls']:.3f}", f"con {self.last['loss_con']:.3f}",
                      f"hq {100 * self.last['hq_fraction']:.0f}%", f"b {self.last['threshold']:.2f}"]
        if skipped_total:
            parts.append(f"skipped {skipped_total}")
        parts += [f"lr {lr:.4g}", f"{rate:.1f} img/s", f"ETA {format_eta(eta)}"]
        print("  ".join(parts), flush=True)
        if self.writer is not None:
            for k, v in self.last.items():
                self.writer.add_scalar(f"train/{k}", v, step)
            self.writer.add_scalar("train/lr", lr, step)
            self.writer.add_scalar("train/samples_per_s", rate, step)
            self.writer.add_scalar("train/skipped_steps", skipped_total, step)
        self.history.append({"step": step, **self.last})

    def summary(self) -> dict:
        """Speed figures for ``summary.json`` (medians over the logged windows after the first)."""
        def median(values):
            return statistics.median(values) if values else None
        return {"samples_per_s": median(self.rates), "step_s": median(self.step_times),
                "data_wait_s": median(self.data_waits)}
