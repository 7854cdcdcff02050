"""Process helpers shared by the tests: the repository root, the arcface_torch folder named by
``ARCFACE_TORCH_ROOT`` (read here only) and the one reason text of its skip, the git skip, a tool of ``tools/``
imported in-process, a child environment without torch.distributed's variables, a free TCP port and a
subprocess run that cannot hang. The fixtures built on them (``arcface_root``, ``ns``, ...) are in conftest.py."""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from qgface_plugin.arcface import checkout
from qgface_plugin.utils import free_port  # the tests' free port: one home

__all__ = ["ROOT", "TOOLS", "UPSTREAM_REASON", "needs_git", "upstream_root", "tool", "clean_env", "free_port",
           "run_guarded"]

#: the repository root (tools/, patches/, recognition_configs/ are under it).
ROOT = Path(__file__).resolve().parents[1]
#: the folder of the command-line tools (conftest.py puts it on ``sys.path``).
TOOLS = ROOT / "tools"

#: why a test marked ``upstream`` (or asking for the ``arcface_root`` fixture) skips.
UPSTREAM_REASON = (f"{checkout.ENV_VAR} not set: point it at insightface's {checkout.ARCFACE_SUBDIR} at commit "
                   f"{checkout.PINNED_COMMIT[:12]} (python tools/fetch_arcface_torch.py prints one)")

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def upstream_root() -> Path | None:
    """The arcface_torch folder named by ``ARCFACE_TORCH_ROOT`` now (None where it is not set or empty)."""
    value = os.environ.get(checkout.ENV_VAR)
    return Path(value) if value else None


def tool(name: str):
    """``tools/<name>.py`` imported as a fresh module (to call its ``main`` in this process); a test may change
    its globals without touching another test's copy. ``import <name>`` gives the shared one."""
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clean_env(**extra) -> dict:
    """This process's environment without the torch.distributed rendezvous variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(extra)
    return env


def run_guarded(cmd, timeout, **popen_kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own session (stderr merged into stdout); on timeout the whole group
    (torchrun and its workers included) is killed and the test fails with the output's tail."""
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **popen_kwargs)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(map(str, cmd))} ran past {timeout} s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")
