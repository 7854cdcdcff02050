"""Spawn a small gloo process group on CPU for the distributed tests.

``spawn_workers(fn, tmp_dir, args)`` starts ``world_size`` fresh processes (``spawn`` start method),
each of which sets torch to one thread, joins a gloo group on a free localhost port, runs
``fn(rank, world_size, *args)`` and ``torch.save``-s its return value to ``tmp_dir/rank{r}.pt``.
The parent waits with a deadline; a worker that raises, dies or hangs makes the call raise (and the
other workers are stopped), so a distributed deadlock fails the test instead of blocking the run.

``fn`` must be a module-level function (it is pickled by reference into the children).
"""
from __future__ import annotations

import datetime
import multiprocessing
import os
import sys
import time
import traceback

import torch

from _proc import free_port

#: gloo collective timeout inside the workers (a peer that never arrives raises after this).
COLLECTIVE_TIMEOUT_S = 30
#: the parent gives up on the whole group after this (startup + work + a collective timeout).
JOIN_TIMEOUT_S = 60


def _worker(fn, rank: int, world_size: int, port: int, out_dir: str, args: tuple) -> None:
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    import torch.distributed as dist

    out = os.path.join(out_dir, f"rank{rank}.pt")
    try:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
        result = fn(rank, world_size, *args)
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:  # report and exit non-zero; the parent stops the other ranks
        torch.save({"__error__": traceback.format_exc()}, out)
        sys.stdout.flush()
        os._exit(1)
    torch.save(result, out)


def spawn_workers(fn, out_dir, args: tuple = (), world_size: int = 2,
                  timeout_s: float = JOIN_TIMEOUT_S) -> list:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` gloo ranks; returns their results.

    Raises ``AssertionError`` naming the rank and its traceback if any worker fails, and after
    ``timeout_s`` seconds if any is still running (a hang); the remaining workers are killed.
    """
    out_dir = str(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    for r in range(world_size):
        path = os.path.join(out_dir, f"rank{r}.pt")
        if os.path.exists(path):
            os.remove(path)
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(fn, r, world_size, port, out_dir, args), daemon=True)
             for r in range(world_size)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout_s
    failed = False
    try:
        while any(p.is_alive() for p in procs):
            if any(p.exitcode not in (None, 0) for p in procs):
                failed = True  # one rank died: its peers would only wait for the collective timeout
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
    finally:
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(5)

    errors, results = [], []
    for r, p in enumerate(procs):
        path = os.path.join(out_dir, f"rank{r}.pt")
        res = torch.load(path, weights_only=False) if os.path.exists(path) else None
        if isinstance(res, dict) and "__error__" in res:
            errors.append(f"rank {r} raised:\n{res['__error__']}")
        elif res is None or p.exitcode != 0:
            if r in hung and not failed:
                errors.append(f"rank {r} still running after {timeout_s} s (hang?)")
            elif r not in hung:
                errors.append(f"rank {r} exited with code {p.exitcode} and no result")
        results.append(res)
    if errors or hung:
        if not errors:
            errors.append(f"ranks {hung} were stopped after a peer failed")
        raise AssertionError("distributed workers failed:\n" + "\n".join(errors))
    return results
