"""What the tests share: tools/ on ``sys.path`` (``import eval_scface`` works; tests/ is there through pytest's
rootdir-relative import), the ``upstream`` marker's skip, and the arcface_torch fixtures.

A test that needs arcface_torch is marked ``@pytest.mark.upstream`` (or asks for ``arcface_root``/``ns``, which
marks it); without ``ARCFACE_TORCH_ROOT`` it skips with :data:`_proc.UPSTREAM_REASON`, before its fixtures run.
Fixtures: ``arcface_root`` (the folder, a Path), ``ns`` (:func:`qgface_plugin.arcface.upstream.load` of it, once
per module), ``isolated`` (no ``ARCFACE_TORCH_ROOT``, an empty working directory and repository root) and
``fake_root`` (makes a folder that ``checkout.find_root`` accepts). Process helpers are in tests/_proc.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from _proc import TOOLS, UPSTREAM_REASON, upstream_root
from qgface_plugin.arcface import checkout

if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

UPSTREAM_FIXTURE = "arcface_root"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """A test that asks for the upstream folder (directly or through ``ns`` or another fixture) is marked."""
    for item in items:
        if UPSTREAM_FIXTURE in getattr(item, "fixturenames", ()) and item.get_closest_marker("upstream") is None:
            item.add_marker(pytest.mark.upstream)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Skip an ``upstream`` test without ``ARCFACE_TORCH_ROOT`` (before the other skip marks and its fixtures)."""
    if item.get_closest_marker("upstream") is not None and upstream_root() is None:
        pytest.skip(UPSTREAM_REASON)


@pytest.fixture(scope="session")
def arcface_root() -> Path:
    """The arcface_torch folder named by ``ARCFACE_TORCH_ROOT`` (skips without it)."""
    root = upstream_root()
    if root is None:
        pytest.skip(UPSTREAM_REASON)
    return root


@pytest.fixture(scope="module")
def ns(arcface_root):
    """:func:`qgface_plugin.arcface.upstream.load` of ``ARCFACE_TORCH_ROOT`` (skips without it)."""
    from qgface_plugin.arcface import upstream
    return upstream.load(arcface_root)


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No ARCFACE_TORCH_ROOT, an empty working directory and an empty 'repository root'."""
    monkeypatch.delenv(checkout.ENV_VAR, raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(checkout, "REPO_ROOT", tmp_path / "repo")
    return tmp_path


@pytest.fixture
def fake_root():
    """``fake_root(path)`` makes ``path`` a folder that find_root accepts (it holds the marker file) and nothing else."""
    def make(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        (path / checkout.MARKER_FILE).write_text("# fake\n")
        return path
    return make
