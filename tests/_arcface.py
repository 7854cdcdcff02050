"""What the arcface_torch integration tests share: the upstream folder named by ``ARCFACE_TORCH_ROOT`` (and the
skip without it), its loaded namespace, an isolated search for it, and running a tool of ``tools/`` in-process."""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from qgface_plugin.arcface import checkout, upstream

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_ENV = os.environ.get(checkout.ENV_VAR)
needs_upstream = pytest.mark.skipif(
    not UPSTREAM_ENV,
    reason=f"{checkout.ENV_VAR} not set: point it at insightface's {checkout.ARCFACE_SUBDIR} at commit "
           f"{checkout.PINNED_COMMIT[:12]} (python tools/fetch_arcface_torch.py prints one)")
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def tool(name):
    """``tools/<name>.py`` imported as a module (to call its ``main`` in this process)."""
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clean_env(**extra) -> dict:
    """This process's environment without the torch.distributed rendezvous variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(extra)
    return env


def fake_root(path: Path) -> Path:
    """A folder that find_root accepts (it holds the marker file) and nothing else."""
    path.mkdir(parents=True, exist_ok=True)
    (path / checkout.MARKER_FILE).write_text("# fake\n")
    return path


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No ARCFACE_TORCH_ROOT, an empty working directory and an empty 'repository root'."""
    monkeypatch.delenv(checkout.ENV_VAR, raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(checkout, "REPO_ROOT", tmp_path / "repo")
    return tmp_path


@pytest.fixture(scope="module")
def ns():
    """:func:`qgface_plugin.arcface.upstream.load` of ``ARCFACE_TORCH_ROOT`` (skips without it)."""
    if not UPSTREAM_ENV:
        pytest.skip(f"{checkout.ENV_VAR} not set")
    return upstream.load(UPSTREAM_ENV)
