#!/usr/bin/env python
"""Fetch insightface's ``recognition/arcface_torch`` at the pinned commit, apply our patches, verify it.

    python tools/fetch_arcface_torch.py                                   # clone from GitHub (network)
    python tools/fetch_arcface_torch.py --source ../insightface           # a local clone (working tree)
    python tools/fetch_arcface_torch.py --source /path/to/insightface.git # a bare / git directory
    python tools/fetch_arcface_torch.py --dest third_party/arcface_torch --force   # replace an old copy

Steps: ``git archive <commit> recognition/arcface_torch | tar -x`` into a temporary folder beside the
destination; ``git apply -p1`` of every ``patches/*.patch`` (sorted; written against the
arcface_torch folder, paths like ``a/train_v2.py``); ``qgface_plugin.arcface.upstream.check_api`` on the
result (in a child process, so this process imports nothing from it); a ``QGFACE_UPSTREAM.json``
record (commit, source, patches); then a rename into ``--dest``. An existing destination is only
replaced with ``--force``. Without ``--source`` the repository is cloned with
``--filter=blob:none`` (only the blobs of the extracted folder are downloaded).

Progress goes to stderr; the last line of stdout is the folder to use as ``ARCFACE_TORCH_ROOT``
(``third_party/arcface_torch``, the default destination, is found without it).

Exit codes: 0 done; 1 bad arguments, source, patch or check; 2 the clone failed (no network?).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    from qgface_plugin.arcface import upstream
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.append(str(REPO))
    from qgface_plugin.arcface import upstream

DEFAULT_URL = "https://github.com/deepinsight/insightface"
DEFAULT_DEST = upstream.DEFAULT_DIR
PATCHES_DIR = REPO / "patches"


class FetchError(Exception):
    """A step failed; ``code`` is the exit status main() returns."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _log(msg: str) -> None:
    print(f"[fetch_arcface_torch] {msg}", file=sys.stderr, flush=True)


def _git_env() -> dict:
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"  # never wait for credentials
    return env


def _run(cmd, what: str, code: int = 1, **kwargs) -> subprocess.CompletedProcess:
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
            f"      (a clone made elsewhere, copied here; it must contain commit {upstream.PINNED_COMMIT[:12]})\n"
            f"  - set {upstream.ENV_VAR}=<path to insightface>/{upstream.ARCFACE_SUBDIR}\n"
            "      (an existing copy of the folder at that commit)")


def git_base(source: Path) -> list:
    """The ``git`` command prefix that reads ``source``: a working-tree clone or a bare/git directory."""
    if not source.is_dir():
        raise FetchError(f"--source {source} is not a folder: pass an insightface clone or its git directory")
    if (source / ".git").exists():
        base = ["git", "-C", str(source)]
    else:
        base = ["git", "--git-dir", str(source)]
    probe = subprocess.run(base + ["rev-parse", "--git-dir"], capture_output=True, text=True, env=_git_env())
    if probe.returncode != 0:
        hint = ""
        if (source / upstream.MARKER_FILE).is_file() or (source / upstream.ARCFACE_SUBDIR).is_dir():
            hint = (f" It looks like a plain copy of the files: use it directly with "
                    f"{upstream.ENV_VAR}={source / ('' if (source / upstream.MARKER_FILE).is_file() else upstream.ARCFACE_SUBDIR)}")
        raise FetchError(f"--source {source} is neither a git clone (with .git) nor a git directory.{hint}")
    return base


def clone(url: str, workdir: Path) -> list:
    """``git clone --filter=blob:none --no-checkout url``; FetchError with exit code 2 when it fails."""
    target = workdir / "insightface"
    _log(f"cloning {url} (blob-less, no checkout) ...")
    cmd = ["git", "-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=60", "clone", "--quiet",
           "--filter=blob:none", "--no-checkout", url, str(target)]
    try:
        _run(cmd, f"cloning {url}", code=2)
    except FetchError as e:
        raise FetchError(f"{e}\n{_alternatives()}", code=2) from e
    return ["git", "-C", str(target)]


def _check_commit(base: list, commit: str, source_desc: str) -> str:
    proc = subprocess.run(base + ["rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
                          capture_output=True, text=True, env=_git_env())
    if proc.returncode != 0:
        raise FetchError(f"commit {commit} is not in {source_desc}: update that clone (git fetch) or pass "
                         "--commit with a commit it has")
    full = proc.stdout.strip()
    proc = subprocess.run(base + ["cat-file", "-e", f"{full}:{upstream.ARCFACE_SUBDIR}"],
                          capture_output=True, text=True, env=_git_env())
    if proc.returncode != 0:
        raise FetchError(f"commit {full} of {source_desc} has no {upstream.ARCFACE_SUBDIR} folder")
    return full


def extract(base: list, commit: str, into: Path) -> Path:
    """``git archive <commit> recognition/arcface_torch | tar -x -C into``; returns the extracted folder."""
    _log(f"extracting {upstream.ARCFACE_SUBDIR} at {commit[:12]} ...")
    archive = subprocess.Popen(base + ["archive", "--format=tar", commit, upstream.ARCFACE_SUBDIR],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_git_env())
    untar = subprocess.run(["tar", "-x", "-f", "-", "-C", str(into)], stdin=archive.stdout,
                           capture_output=True, text=True)
    archive.stdout.close()
    err = archive.stderr.read().decode(errors="replace")
    archive.stderr.close()
    if archive.wait() != 0 or untar.returncode != 0:
        raise FetchError(f"git archive {commit} {upstream.ARCFACE_SUBDIR} | tar -x failed:\n{err}{untar.stderr}")
    folder = into / upstream.ARCFACE_SUBDIR
    if not (folder / upstream.MARKER_FILE).is_file():
        raise FetchError(f"the archive of {commit} has no {upstream.ARCFACE_SUBDIR}/{upstream.MARKER_FILE}")
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
                raise FetchError(f"patch {patch} does not apply to {upstream.ARCFACE_SUBDIR} at the chosen commit:\n"
                                 f"{proc.stderr.strip()}\nFix the patch, or fetch with --no-patches.")
        records.append({"name": patch.name, "sha256": hashlib.sha256(patch.read_bytes()).hexdigest(),
                        "files": upstream.patched_files(patch)})
    return records


def verify(folder: Path) -> None:
    """``qgface_plugin.arcface.upstream.check_api(folder)`` in a child process (its imports stay out of this one)."""
    _log("checking the API (qgface_plugin.arcface.upstream.check_api) ...")
    env = dict(os.environ)
    env.pop(upstream.ENV_VAR, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "qgface_plugin.arcface.upstream", str(folder)],
                          capture_output=True, text=True, env=env)
    for line in proc.stderr.splitlines():
        if "UpstreamVersionWarning" in line or "differs from insightface commit" in line:
            _log(line.strip())
    if proc.returncode != 0:
        raise FetchError(f"the extracted folder fails the API check:\n{proc.stderr.strip()}")


def fetch(source=None, dest=DEFAULT_DEST, commit=upstream.PINNED_COMMIT, patches=True, force=False,
          url=DEFAULT_URL, patches_dir=PATCHES_DIR, check=True) -> Path:
    """Put ``recognition/arcface_torch`` at ``commit`` into ``dest`` (see the module docstring); returns ``dest``.

    Raises:
        FetchError: with ``code`` 2 when cloning failed, 1 otherwise.
    """
    dest = Path(dest).expanduser().absolute()
    if dest.exists() and not force:
        raise FetchError(f"{dest} already exists: pass --force to replace it (or --dest for another folder)")
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
            records = apply_patches(folder, Path(patches_dir)) if patches else []
            if not patches:
                _log("--no-patches: upstream as it is at the commit")
            record = {
                "commit": commit,
                "subdir": upstream.ARCFACE_SUBDIR,
                "source": source_desc,
                "patches": records,
                "patched_files": sorted({f for r in records for f in r["files"]}),
                "tool": "tools/fetch_arcface_torch.py",
            }
            (folder / upstream.FETCH_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="local insightface clone (working tree) or git directory; "
                                         "default: clone from GitHub")
    parser.add_argument("--dest", default=DEFAULT_DEST, help=f"destination folder (default {DEFAULT_DEST})")
    parser.add_argument("--commit", default=upstream.PINNED_COMMIT,
                        help=f"insightface commit (default: the pinned {upstream.PINNED_COMMIT[:12]})")
    parser.add_argument("--no-patches", action="store_true", help="do not apply patches/*.patch")
    parser.add_argument("--force", action="store_true", help="replace an existing destination")
    parser.add_argument("--url", default=DEFAULT_URL, help="repository to clone without --source")
    parser.add_argument("--patches-dir", default=str(PATCHES_DIR), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        dest = fetch(source=args.source, dest=args.dest, commit=args.commit, patches=not args.no_patches,
                     force=args.force, url=args.url, patches_dir=args.patches_dir)
    except FetchError as e:
        print(f"fetch_arcface_torch: {e}", file=sys.stderr)
        return e.code
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
