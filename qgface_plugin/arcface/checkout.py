"""Locating and pinning the arcface_torch checkout ("upstream"): where it is, which commit it must be.

No upstream code lives in this repository. This module knows the pin (:data:`PINNED_COMMIT`, the git blob
hashes :data:`PINNED_BLOBS` of the files the plugin relies on) and where a copy is looked for
(:func:`find_root`: ``ARCFACE_TORCH_ROOT``, else ``third_party/arcface_torch``). It checks a copy without
importing it: :func:`check_files` (files present, hashes as pinned) and :func:`check_symbols` (names and
arguments of modules imported by :mod:`qgface_plugin.arcface.upstream`, which runs both in ``check_api``).

It also owns the pin record, ``QGFACE_UPSTREAM.json`` (:data:`FETCH_RECORD`), that
:mod:`qgface_plugin.arcface.fetch` writes into a copy (:func:`write_fetch_record`) and the file check reads
back (:func:`read_fetch_record`): one definition of its name and fields. Nothing here imports arcface_torch.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import warnings
from pathlib import Path

from ..errors import QGFaceConfigError

__all__ = [
    "PINNED_COMMIT", "ARCFACE_SUBDIR", "ENV_VAR", "DEFAULT_DIR", "MARKER_FILE", "FETCH_RECORD", "PATCHES_DIR",
    "REQUIRED_FILES", "PINNED_BLOBS", "PATCHED_FILES", "UpstreamNotFoundError", "UpstreamAPIError",
    "UpstreamVersionWarning", "find_root", "how_to_get_it", "git_blob_sha1", "patched_files", "patch_record",
    "write_fetch_record", "read_fetch_record", "check_files", "check_symbols", "parameter_names",
]

#: insightface commit the plugin is written and tested against.
PINNED_COMMIT = "7fadd420c2351d0ffa8cac403421c1a3ed733365"
#: the folder of the insightface repository that is "upstream".
ARCFACE_SUBDIR = "recognition/arcface_torch"
#: environment variable naming the upstream folder.
ENV_VAR = "ARCFACE_TORCH_ROOT"
#: default place of the upstream folder (git-ignored), relative to the working directory or the repository.
DEFAULT_DIR = "third_party/arcface_torch"
#: file that marks an upstream folder.
MARKER_FILE = "partial_fc_v2.py"
#: the pin record written into a fetched folder (see :func:`write_fetch_record`).
FETCH_RECORD = "QGFACE_UPSTREAM.json"
#: the repository root (parent of this package's folder); a module attribute so tests can move it.
REPO_ROOT = Path(__file__).resolve().parents[2]
#: folder of our patches (``*.patch``, written against the arcface_torch folder), relative to :data:`REPO_ROOT`.
PATCHES_DIR = "patches"

#: files the plugin relies on.
REQUIRED_FILES = (
    "partial_fc_v2.py", "dataset.py", "losses.py", "lr_scheduler.py", "backbones/__init__.py",
    "utils/utils_config.py", "utils/utils_distributed_sampler.py", "eval/verification.py", "train_v2.py",
)

#: git blob SHA-1 of each required file at PINNED_COMMIT (``git ls-tree -r <commit> recognition/arcface_torch``).
PINNED_BLOBS = {
    "backbones/__init__.py": "b3eaa4945c86efa94fd0cf836cdb053ab7401d64",
    "dataset.py": "6cdbdcf056786c46395cc0dd60a8db0c79bc7f5b",
    "eval/verification.py": "edacf8d8136bc2dadb3d24d37fd2a812d0a443ee",
    "losses.py": "7d54414c77271dd6455d77b0ab06883d797fcd3a",
    "lr_scheduler.py": "6f3cda31d500b54b8a1ad9b36abfeff9cc754ef6",
    "partial_fc_v2.py": "0752554ca1a99c35347dce6cccd121b5cd69f9c6",
    "train_v2.py": "9563c6533208392ce1a81cbfaae4bcde78ade704",
    "utils/utils_config.py": "0c02eaf70fc0140aca7925f621c29a496f491cae",
    "utils/utils_distributed_sampler.py": "cea6703965bff81f8b789ffd933f9b2f889cb680",
}
#: files our patches (patches/*.patch) modify, so a changed hash there is expected (see patched_files()).
PATCHED_FILES = ("lr_scheduler.py", "train_v2.py")


class UpstreamNotFoundError(QGFaceConfigError):
    """No arcface_torch folder was found; the message lists the places searched and how to get one."""


class UpstreamAPIError(QGFaceConfigError):
    """The arcface_torch folder lacks a file, symbol or argument the plugin relies on."""


class UpstreamVersionWarning(UserWarning):
    """An arcface_torch file differs from the pinned commit (the plugin may still work)."""


# --------------------------------------------------------------------------------------------- locate

def how_to_get_it() -> str:
    """The three ways to get a copy at the pinned commit, for error messages."""
    return (
        "Get it in one of these ways (from the repository root):\n"
        "  1. python tools/fetch_arcface_torch.py\n"
        "       (clones insightface from GitHub; needs network access to github.com)\n"
        "  2. python tools/fetch_arcface_torch.py --source <insightface clone or git dir>\n"
        "       (offline, from a local insightface clone or bare git directory that has commit "
        f"{PINNED_COMMIT[:12]})\n"
        f"  3. set {ENV_VAR}=<path to insightface>/{ARCFACE_SUBDIR}\n"
        f"       (an existing copy of the folder at commit {PINNED_COMMIT[:12]})")


def _has_marker(path: Path) -> bool:
    return (path / MARKER_FILE).is_file()


def _accept(path: Path):
    """The upstream folder at ``path``, or inside it when ``path`` is an insightface checkout; else None."""
    if _has_marker(path):
        return path
    nested = path / ARCFACE_SUBDIR
    if _has_marker(nested):
        return nested
    return None


def find_root(root=None) -> Path:
    """The arcface_torch folder to use, as an absolute path.

    Looks, in order, at: ``root`` if given (nothing else is tried then); else ``$ARCFACE_TORCH_ROOT``
    if set (nothing else is tried then); else ``third_party/arcface_torch`` under the current
    directory, then under the repository root. A folder counts when it holds ``partial_fc_v2.py``;
    an insightface checkout (holding ``recognition/arcface_torch``) is accepted too.

    Raises:
        UpstreamNotFoundError: nothing found; the message lists the places searched and how to get it.
    """
    if root is not None:
        candidates = [("the argument", Path(root).expanduser())]
    elif os.environ.get(ENV_VAR):
        candidates = [(f"${ENV_VAR}", Path(os.environ[ENV_VAR]).expanduser())]
    else:
        candidates = [(f"${ENV_VAR}", None),
                      ("the current directory", Path.cwd() / DEFAULT_DIR),
                      ("the repository", REPO_ROOT / DEFAULT_DIR)]
    searched = []
    for label, path in candidates:
        if path is None:
            searched.append(f"  - ${ENV_VAR}: not set")
            continue
        found = _accept(path)
        if found is not None:
            return found.resolve()
        why = "does not exist" if not path.exists() else f"has no {MARKER_FILE}"
        searched.append(f"  - {path} (from {label}): {why}")
    raise UpstreamNotFoundError(
        f"insightface's {ARCFACE_SUBDIR} (pinned commit {PINNED_COMMIT}) was not found. Searched:\n"
        + "\n".join(searched) + "\n" + how_to_get_it())


# ------------------------------------------------------------------------------------ the pin record

def git_blob_sha1(path) -> str:
    """Git's object id for the file's bytes (``git hash-object``): sha1(b"blob <size>\\0" + content)."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def patched_files(patch) -> list:
    """Files (relative to the arcface_torch folder) that a unified diff modifies."""
    files = []
    for line in Path(patch).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("+++ ") and not line.startswith("+++ /dev/null"):
            path = line[4:].split("\t")[0].strip()
            files.append(path[2:] if path.startswith(("a/", "b/")) else path)
    return files


def patch_record(patch) -> dict:
    """One applied patch as the pin record lists it: ``name``, ``sha256`` (of the file), ``files`` it modifies."""
    patch = Path(patch)
    return {"name": patch.name, "sha256": hashlib.sha256(patch.read_bytes()).hexdigest(),
            "files": patched_files(patch)}


def write_fetch_record(folder, commit: str, source: str, patches=()) -> dict:
    """Write the pin record :data:`FETCH_RECORD` into ``folder``; returns it.

    Fields: ``commit`` (full id), ``subdir`` (:data:`ARCFACE_SUBDIR`), ``source`` (URL or folder it came
    from), ``patches`` (:func:`patch_record` of each patch applied, in order), ``patched_files`` (sorted union
    of their ``files``: :func:`check_files` expects these to differ from :data:`PINNED_BLOBS`) and ``tool``.
    """
    patches = list(patches)
    record = {
        "commit": commit,
        "subdir": ARCFACE_SUBDIR,
        "source": source,
        "patches": patches,
        "patched_files": sorted({f for r in patches for f in r["files"]}),
        "tool": "tools/fetch_arcface_torch.py",
    }
    (Path(folder) / FETCH_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def read_fetch_record(root) -> dict:
    """The pin record of ``root`` (see :func:`write_fetch_record`), or ``{}`` when it has none or it is unreadable."""
    try:
        return json.loads((Path(root) / FETCH_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _expected_changes(root: Path) -> set:
    ours = set(PATCHED_FILES)
    for patch in sorted((REPO_ROOT / PATCHES_DIR).glob("*.patch")):
        ours.update(patched_files(patch))
    return ours | set(read_fetch_record(root).get("patched_files", ()))


# ---------------------------------------------------------------------------------------------- check

def check_files(root) -> list:
    """Raise UpstreamAPIError for missing :data:`REQUIRED_FILES`; warn for changed ones. Returns the changed files.

    A file whose git blob hash differs from :data:`PINNED_BLOBS` warns with :class:`UpstreamVersionWarning`,
    except the files our patches modify (:data:`PATCHED_FILES`, ``patches/*.patch`` and the pin record's
    ``patched_files``).
    """
    root = Path(root)
    missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
    if missing:
        raise UpstreamAPIError(
            f"{root} is not a complete copy of insightface's {ARCFACE_SUBDIR} at commit {PINNED_COMMIT}: "
            f"missing {', '.join(missing)}. Re-create it with: python tools/fetch_arcface_torch.py --force "
            f"[--source <insightface clone or git dir>], or point {ENV_VAR} at a complete copy.")
    expected_changes = _expected_changes(root)
    changed = []
    for rel, blob in PINNED_BLOBS.items():
        if rel in expected_changes:
            continue
        actual = git_blob_sha1(root / rel)
        if actual != blob:
            changed.append(rel)
            warnings.warn(
                f"{root / rel} differs from insightface commit {PINNED_COMMIT} (blob {actual[:12]}, "
                f"pinned {blob[:12]}); qgface_plugin is tested against that commit only. "
                "Re-fetch with: python tools/fetch_arcface_torch.py --force", UpstreamVersionWarning, stacklevel=3)
    return changed


def parameter_names(fn) -> list:
    """Names of ``fn``'s parameters (``[]`` when it has no inspectable signature)."""
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []


def check_symbols(mods: dict) -> None:
    """Raise UpstreamAPIError listing every symbol, argument or attribute of the pinned API that ``mods`` lacks.

    ``mods`` maps upstream module names (``partial_fc_v2``, ``utils.utils_config``, ...) to the imported modules.
    """
    problems = []

    def need(module_name, attr, args=(), init_attrs=()):
        mod = mods[module_name]
        obj = getattr(mod, attr, None)
        where = f"{module_name}.{attr}"
        if obj is None:
            problems.append(f"{where} is missing")
            return
        target = obj.__init__ if inspect.isclass(obj) else obj
        have = parameter_names(target)
        lacking = [a for a in args if a not in have]
        if lacking:
            problems.append(f"{where} lacks argument(s) {', '.join(lacking)} (has {', '.join(have) or 'none'})")
        if init_attrs:
            try:
                src = inspect.getsource(obj.__init__)
            except (OSError, TypeError):
                src = ""
            for a in init_attrs:
                if not re.search(rf"self\.{a}\s*(:[^=\n]*)?=", src):
                    problems.append(f"{where}.__init__ no longer sets self.{a}")

    need("partial_fc_v2", "PartialFC_V2", ("margin_loss", "embedding_size", "num_classes", "sample_rate", "fp16"),
         ("class_start", "num_local", "weight", "margin_softmax"))
    pfc = getattr(mods["partial_fc_v2"], "PartialFC_V2", None)
    if pfc is not None and not {"local_embeddings", "local_labels"} <= set(parameter_names(pfc.forward)):
        problems.append("partial_fc_v2.PartialFC_V2.forward lacks (local_embeddings, local_labels)")
    need("partial_fc_v2", "AllGather")
    need("backbones", "get_model", ("name",))
    need("dataset", "MXFaceDataset", ("root_dir", "local_rank"))
    need("dataset", "SyntheticDataset")
    need("dataset", "get_dataloader", ("root_dir", "local_rank", "batch_size"))
    need("lr_scheduler", "PolynomialLRWarmup", ("optimizer", "warmup_iters", "total_iters"))
    need("losses", "CombinedMarginLoss", ("s", "m1", "m2", "m3", "interclass_filtering_threshold"))
    need("utils.utils_config", "get_config", ("config_file",))
    need("eval.verification", "test", ("data_set", "backbone", "batch_size", "nfolds"))
    need("eval.verification", "load_bin", ("path", "image_size"))
    need("utils.utils_distributed_sampler", "DistributedSampler")
    need("utils.utils_distributed_sampler", "setup_seed", ("seed", "cuda_deterministic"))
    need("utils.utils_distributed_sampler", "sync_random_seed", ("seed", "device"))
    if problems:
        raise UpstreamAPIError(
            f"arcface_torch at {Path(mods['partial_fc_v2'].__file__).parent} does not have the API of insightface "
            f"commit {PINNED_COMMIT}:\n  - " + "\n  - ".join(problems)
            + f"\nUse a copy at that commit: python tools/fetch_arcface_torch.py --force, or set {ENV_VAR}.")
