"""Fetching arcface_torch at the pin: extract ``recognition/arcface_torch`` from insightface's git history,
apply our ``patches/*.patch``, check it, record the pin, install it.

:func:`fetch` does, in order: ``git archive <commit> recognition/arcface_torch | tar -x`` into a temporary
folder beside the destination (from a local clone or git directory, or a blob-less ``git clone`` of
:data:`DEFAULT_URL`); ``git apply -p1`` of every ``patches/*.patch`` (sorted; written against the arcface_torch
folder, paths like ``a/train_v2.py``); the pin record ``QGFACE_UPSTREAM.json``
(:func:`qgface_plugin.arcface.checkout.write_fetch_record`, whose fields
:func:`~qgface_plugin.arcface.checkout.check_files` reads back); :func:`qgface_plugin.arcface.upstream.check_api`
on the result, in a child process so that this process imports nothing from it; then a rename into the
destination. An existing destination is only replaced with ``force``.

Errors raise :class:`FetchError`, whose ``code`` follows the tools' convention (:mod:`qgface_plugin.cli`):
2 for bad input (a source that is no git clone, a commit it lacks, a destination that exists), 1 for a step
that failed (clone, archive, patch, API check). ``tools/fetch_arcface_torch.py`` is the command line.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..cli import EXIT_BAD_INPUT, EXIT_FAILED
from . import checkout

__all__ = ["DEFAULT_URL", "FetchError", "default_patches_dir", "git_base", "clone", "extract", "apply_patches",
           "verify", "fetch"]

#: the insightface repository cloned when no local source is given.
DEFAULT_URL = "https://github.com/deepinsight/insightface"


def default_patches_dir() -> Path:
    """This repository's ``patches/`` folder."""
    return checkout.REPO_ROOT / checkout.PATCHES_DIR


class FetchError(Exception):
    """A step failed; ``code`` is the exit status for the command line (2 bad input, 1 a failed step)."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


def _log(msg: str) -> None:
    print(f"[fetch_arcface_torch] {msg}", file=sys.stderr, flush=True)


def _git_env() -> dict:
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"  # never wait for credentials
    return env


def _run(cmd, what: str, code: int = EXIT_FAILED, **kwargs) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_git_env(), **kwargs)
    except FileNotFoundError as e:
        raise FetchError(f"{what}: {cmd[0]} is not installed ({e})", code) from e
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise FetchError(f"{what} failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n{detail}", code)
    return proc


def _alternatives() -> str:
    return ("Alternatives that need no network:\n"
            "  - python tools/fetch_arcface_torch.py --source <insightface clone or git directory>\n"
            f"      (a clone made elsewhere, copied here; it must contain commit {checkout.PINNED_COMMIT[:12]})\n"
            f"  - set {checkout.ENV_VAR}=<path to insightface>/{checkout.ARCFACE_SUBDIR}\n"
            "      (an existing copy of the folder at that commit)")


def git_base(source: Path) -> list:
    """The ``git`` command prefix that reads ``source``: a working-tree clone or a bare/git directory."""
    if not source.is_dir():
        raise FetchError(f"--source {source} is not a folder: pass an insightface clone or its git directory",
                         EXIT_BAD_INPUT)
    if (source / ".git").exists():
        base = ["git", "-C", str(source)]
    else:
        base = ["git", "--git-dir", str(source)]
    probe = subprocess.run(base + ["rev-parse", "--git-dir"], capture_output=True, text=True, env=_git_env())
    if probe.returncode != 0:
        hint = ""
        plain = (source / checkout.MARKER_FILE).is_file()
        if plain or (source / checkout.ARCFACE_SUBDIR).is_dir():
            hint = (f" It looks like a plain copy of the files: use it directly with "
                    f"{checkout.ENV_VAR}={source / ('' if plain else checkout.ARCFACE_SUBDIR)}")
        raise FetchError(f"--source {source} is neither a git clone (with .git) nor a git directory.{hint}",
                         EXIT_BAD_INPUT)
    return base


def clone(url: str, workdir: Path) -> list:
    """``git clone --filter=blob:none --no-checkout url``; FetchError (code 1, with the offline alternatives)
    when it fails."""
    target = workdir / "insightface"
    _log(f"cloning {url} (blob-less, no checkout) ...")
    cmd = ["git", "-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=60", "clone", "--quiet",
           "--filter=blob:none", "--no-checkout", url, str(target)]
    try:
        _run(cmd, f"cloning {url}")
    except FetchError as e:
        raise FetchError(f"{e}\n{_alternatives()}") from e
    return ["git", "-C", str(target)]


def _check_commit(base: list, commit: str, source_desc: str) -> str:
    proc = subprocess.run(base + ["rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
                          capture_output=True, text=True, env=_git_env())
    if proc.returncode != 0:
        raise FetchError(f"commit {commit} is not in {source_desc}: update that clone (git fetch) or pass "
                         "--commit with a commit it has", EXIT_BAD_INPUT)
    full = proc.stdout.strip()
    proc = subprocess.run(base + ["cat-file", "-e", f"{full}:{checkout.ARCFACE_SUBDIR}"],
                          capture_output=True, text=True, env=_git_env())
    if proc.returncode != 0:
        raise FetchError(f"commit {full} of {source_desc} has no {checkout.ARCFACE_SUBDIR} folder", EXIT_BAD_INPUT)
    return full


def extract(base: list, commit: str, into: Path) -> Path:
    """``git archive <commit> recognition/arcface_torch | tar -x -C into``; returns the extracted folder."""
    _log(f"extracting {checkout.ARCFACE_SUBDIR} at {commit[:12]} ...")
    archive = subprocess.Popen(base + ["archive", "--format=tar", commit, checkout.ARCFACE_SUBDIR],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_git_env())
    untar = subprocess.run(["tar", "-x", "-f", "-", "-C", str(into)], stdin=archive.stdout,
                           capture_output=True, text=True)
    archive.stdout.close()
    err = archive.stderr.read().decode(errors="replace")
    archive.stderr.close()
    if archive.wait() != 0 or untar.returncode != 0:
        raise FetchError(f"git archive {commit} {checkout.ARCFACE_SUBDIR} | tar -x failed:\n{err}{untar.stderr}")
    folder = into / checkout.ARCFACE_SUBDIR
    if not (folder / checkout.MARKER_FILE).is_file():
        raise FetchError(f"the archive of {commit} has no {checkout.ARCFACE_SUBDIR}/{checkout.MARKER_FILE}")
    return folder


def apply_patches(folder: Path, patches_dir: Path) -> list:
    """``git apply -p1`` each ``patches_dir/*.patch`` (sorted) inside ``folder``; returns their records."""
    patches = sorted(patches_dir.glob("*.patch")) if patches_dir.is_dir() else []
    if not patches:
        _log(f"no patches in {patches_dir} (nothing to apply)")
        return []
    env = _git_env()
    # The folder may sit inside another git work tree (third_party/ of this repository): stop git from
    # finding it, so that paths are taken relative to the folder.
    env["GIT_CEILING_DIRECTORIES"] = str(folder.parent)
    records = []
    for patch in patches:
        _log(f"applying {patch.name}")
        for extra in (["--check"], []):
            proc = subprocess.run(["git", "apply", "-p1", "--whitespace=nowarn", *extra, str(patch)],
                                  cwd=folder, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise FetchError(f"patch {patch} does not apply to {checkout.ARCFACE_SUBDIR} at the chosen commit:\n"
                                 f"{proc.stderr.strip()}\nFix the patch, or fetch with --no-patches.")
        records.append(checkout.patch_record(patch))
    return records


def verify(folder: Path) -> None:
    """``qgface_plugin.arcface.upstream.check_api(folder)`` in a child process (its imports stay out of this one)."""
    _log("checking the API (qgface_plugin.arcface.upstream.check_api) ...")
    env = dict(os.environ)
    env.pop(checkout.ENV_VAR, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(checkout.REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "qgface_plugin.arcface.upstream", str(folder)],
                          capture_output=True, text=True, env=env)
    for line in proc.stderr.splitlines():
        if "UpstreamVersionWarning" in line or "differs from insightface commit" in line:
            _log(line.strip())
    if proc.returncode != 0:
        raise FetchError(f"the extracted folder fails the API check:\n{proc.stderr.strip()}")


def fetch(source=None, dest=checkout.DEFAULT_DIR, commit=checkout.PINNED_COMMIT, patches=True, force=False,
          url=DEFAULT_URL, patches_dir=None, check=True) -> Path:
    """Put ``recognition/arcface_torch`` at ``commit`` into ``dest`` (see the module docstring); returns ``dest``.

    ``patches_dir`` defaults to :func:`default_patches_dir`; ``check=False`` skips the API check.

    Raises:
        FetchError: ``code`` 2 for bad input (source, commit, an existing ``dest`` without ``force``), 1 when a
            step failed (clone, archive, patch, API check).
    """
    dest = Path(dest).expanduser().absolute()
    if dest.exists() and not force:
        raise FetchError(f"{dest} already exists: pass --force to replace it (or --dest for another folder)",
                         EXIT_BAD_INPUT)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fetch_arcface_torch_") as work:
        work = Path(work)
        if source is None:
            base = clone(url, work)
            source_desc = url
        else:
            source = Path(source).expanduser().absolute()
            base = git_base(source)
            source_desc = str(source)
        commit = _check_commit(base, commit, source_desc)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.new-", dir=dest.parent))
        try:
            folder = extract(base, commit, staging)
            records = apply_patches(folder, default_patches_dir() if patches_dir is None else Path(patches_dir)) \
                if patches else []
            if not patches:
                _log("--no-patches: upstream as it is at the commit")
            checkout.write_fetch_record(folder, commit, source_desc, records)
            if check:
                verify(folder)
            _install(folder, dest, force)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    _log(f"done: {dest}")
    return dest


def _install(folder: Path, dest: Path, force: bool) -> None:
    """Rename ``folder`` to ``dest``; an existing ``dest`` (only with ``force``) is moved aside first, removed after."""
    old = None
    if dest.exists() or dest.is_symlink():
        if not force:
            raise FetchError(f"{dest} appeared while fetching: pass --force to replace it")
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.rename(dest, old / dest.name)
    try:
        os.rename(folder, dest)
    except OSError:
        if old is not None:
            os.rename(old / dest.name, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
