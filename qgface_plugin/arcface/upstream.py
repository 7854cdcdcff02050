"""Locate, verify and import insightface's ``recognition/arcface_torch`` ("upstream"), plus its fixes.

No upstream code lives in this repository. A copy of the folder at the pinned commit is found by
:func:`find_root` (``ARCFACE_TORCH_ROOT`` or ``third_party/arcface_torch``; ``tools/fetch_arcface_torch.py``
makes one), checked by :func:`check_api` and imported by :func:`load`, which returns the handful of
upstream objects the plugin uses.

Upstream's modules have flat, generic top-level names (``utils``, ``eval``, ``dataset``, ``losses``,
``backbones``, ``configs``), so importing them means putting the upstream folder at the front of
``sys.path``; :func:`load` refuses to go on if a module of one of those names was already imported
from somewhere else. ``train_v2`` is never imported (it initialises NCCL at import time).

Fixes for upstream on current libraries, each applied only when the installed library needs it:

* :func:`apply_fixes` (called by :func:`load`): SciPy >= 1.9 rejects repeated x in
  ``interp1d(kind='slinear')``, which ``eval/verification.calculate_val`` hits on plateaus of the
  false-accept curve; the numpy aliases ``np.int``/``np.float``/``np.bool`` removed in numpy 1.24.
* :func:`lr_scheduler_compat` / :func:`install_lr_scheduler_compat`: torch >= 2.7 removed
  ``LRScheduler.__init__``'s ``verbose`` argument, which ``PolynomialLRWarmup`` passes.
* :func:`cpu_shim` / :func:`install_cpu_shim` / :func:`partial_fc_cpu_shim`: upstream's hard-coded
  CUDA/NCCL calls, only on machines without CUDA.
* :func:`install_tensorboard_fallback`: ``torch.utils.tensorboard`` backed by tensorboardX when the
  ``tensorboard`` package is not installed (``train_v2`` and ``utils_callbacks`` import it).
* :func:`install_menpo_stub`: a stand-in for ``menpo.visualize.viewmatplotlib`` (``eval_ijbc.py``
  imports it only for ``sample_colours_from_colourmap``) when ``menpo`` is not installed.

Nothing happens at import time. ``python -m qgface_plugin.arcface.upstream [ROOT]`` prints the root found and
runs :func:`check_api` on it.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import threading
import types
import warnings
from pathlib import Path

import numpy as np

from ..errors import QGFaceConfigError

__all__ = [
    "PINNED_COMMIT", "ARCFACE_SUBDIR", "ENV_VAR", "DEFAULT_DIR", "REQUIRED_FILES", "PINNED_BLOBS",
    "UpstreamNotFoundError", "UpstreamAPIError", "UpstreamConflictError", "UpstreamDependencyError",
    "UpstreamVersionWarning",
    "find_root", "check_api", "load", "apply_fixes", "fix_numpy_aliases", "make_scheduler",
    "lr_scheduler_compat", "install_lr_scheduler_compat", "cpu_shim", "install_cpu_shim",
    "partial_fc_cpu_shim", "install_tensorboard_fallback", "install_menpo_stub", "add_config_dirs", "git_blob_sha1",
    "RepeatedXLinear",
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
#: written into the folder by tools/fetch_arcface_torch.py.
FETCH_RECORD = "QGFACE_UPSTREAM.json"
#: the repository root (parent of this package's folder); a module attribute so tests can move it.
REPO_ROOT = Path(__file__).resolve().parents[2]

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


def patched_files(patch) -> list:
    """Files (relative to the arcface_torch folder) that a unified diff modifies."""
    files = []
    for line in Path(patch).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("+++ ") and not line.startswith("+++ /dev/null"):
            path = line[4:].split("\t")[0].strip()
            files.append(path[2:] if path.startswith(("a/", "b/")) else path)
    return files


def _expected_changes(root: Path) -> set:
    ours = set(PATCHED_FILES)
    for patch in sorted((REPO_ROOT / "patches").glob("*.patch")):
        ours.update(patched_files(patch))
    return ours | set(_read_fetch_record(root).get("patched_files", ()))

#: upstream's top-level module names that can clash with other code in the same process.
GENERIC_NAMES = ("backbones", "dataset", "partial_fc_v2", "losses", "lr_scheduler", "utils", "eval", "configs")
#: the modules load() imports, in order (never train_v2: it initialises NCCL at import time).
MODULES = ("utils.utils_distributed_sampler", "utils.utils_config", "backbones", "dataset", "partial_fc_v2",
           "losses", "lr_scheduler", "eval.verification")

#: pip names of the third-party packages upstream imports, for the error message when one is missing.
_PIP_NAMES = {"sklearn": "scikit-learn", "mxnet": "mxnet==1.9.1", "cv2": "opencv-python-headless",
              "easydict": "easydict", "torchvision": "torchvision", "scipy": "scipy", "timm": "timm"}


def _how_to_get_it() -> str:
    return (
        "Get it in one of these ways (from the repository root):\n"
        "  1. python tools/fetch_arcface_torch.py\n"
        "       (clones insightface from GitHub; needs network access to github.com)\n"
        "  2. python tools/fetch_arcface_torch.py --source <insightface clone or git dir>\n"
        "       (offline, from a local insightface clone or bare git directory that has commit "
        f"{PINNED_COMMIT[:12]})\n"
        f"  3. set {ENV_VAR}=<path to insightface>/{ARCFACE_SUBDIR}\n"
        f"       (an existing copy of the folder at commit {PINNED_COMMIT[:12]})")


class UpstreamNotFoundError(QGFaceConfigError):
    """No arcface_torch folder was found; the message lists the places searched and how to get one."""


class UpstreamAPIError(QGFaceConfigError):
    """The arcface_torch folder lacks a file, symbol or argument the plugin relies on."""


class UpstreamConflictError(QGFaceConfigError):
    """A module with one of arcface_torch's generic top-level names was imported from elsewhere."""


class UpstreamDependencyError(QGFaceConfigError):
    """A third-party package that arcface_torch imports is not installed."""


class UpstreamVersionWarning(UserWarning):
    """An arcface_torch file differs from the pinned commit (the plugin may still work)."""


# --------------------------------------------------------------------------------------------- locate

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
        + "\n".join(searched) + "\n" + _how_to_get_it())


# ---------------------------------------------------------------------------------------------- check

def git_blob_sha1(path) -> str:
    """Git's object id for the file's bytes (``git hash-object``): sha1(b"blob <size>\\0" + content)."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _read_fetch_record(root: Path) -> dict:
    import json
    try:
        return json.loads((root / FETCH_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _check_files(root: Path) -> list:
    """Raise UpstreamAPIError for missing files; warn for changed ones. Returns the changed files."""
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


def _params(fn) -> list:
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []


def _check_symbols(mods: dict) -> None:
    """Raise UpstreamAPIError listing every missing symbol, argument or attribute."""
    problems = []

    def need(module_name, attr, args=(), init_attrs=()):
        mod = mods[module_name]
        obj = getattr(mod, attr, None)
        where = f"{module_name}.{attr}"
        if obj is None:
            problems.append(f"{where} is missing")
            return
        target = obj.__init__ if inspect.isclass(obj) else obj
        have = _params(target)
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
    if pfc is not None and not {"local_embeddings", "local_labels"} <= set(_params(pfc.forward)):
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


def check_api(root=None) -> list:
    """Check that ``root`` (default: :func:`find_root`) has the pinned commit's API.

    Checks the files in :data:`REQUIRED_FILES` exist, compares their git blob hashes with
    :data:`PINNED_BLOBS` (a difference warns with :class:`UpstreamVersionWarning`, except for files our
    patches modify), then imports the modules (as :func:`load` does) and checks the classes, functions,
    arguments and attributes the plugin uses.

    Returns:
        The files whose content differs from the pinned commit (each also warned about).

    Raises:
        UpstreamNotFoundError: ``root`` holds no arcface_torch folder.
        UpstreamAPIError: a file, symbol, argument or attribute is missing.
        UpstreamConflictError, UpstreamDependencyError: see :func:`load`.
    """
    root = find_root(root)
    changed = _check_files(root)
    _check_symbols(_import_modules(root))
    return changed


# --------------------------------------------------------------------------------------------- import

_LOCK = threading.RLock()
_MODULES: dict = {}   # str(root) -> {name: module}
_CACHE: dict = {}     # str(root) -> namespace
_SYS_PATH_ADDED: list = []


def _module_locations(module) -> list:
    locs = []
    if getattr(module, "__file__", None):
        locs.append(module.__file__)
    locs.extend(getattr(module, "__path__", None) or [])
    return locs


def _is_under(location, root: Path) -> bool:
    try:
        Path(location).resolve().relative_to(root)
        return True
    except (ValueError, OSError):
        return False


def _check_conflicts(root: Path) -> None:
    """Raise UpstreamConflictError if a generic top-level name is already imported from outside ``root``."""
    for name in GENERIC_NAMES:
        module = sys.modules.get(name)
        if module is None:
            continue
        locs = _module_locations(module)
        if locs and any(_is_under(loc, root) for loc in locs):
            continue
        where = ", ".join(str(loc) for loc in locs) or "an unknown location (no __file__)"
        raise UpstreamConflictError(
            f"a module named '{name}' is already imported in this process from {where}, not from arcface_torch "
            f"at {root}. arcface_torch's modules use generic top-level names ({', '.join(GENERIC_NAMES)}), so "
            "only one of each can be loaded per process: load arcface_torch (qgface_plugin.arcface.upstream.load) "
            f"before the code that imports the other '{name}', or run that code in a separate process.")


def _ensure_front_of_sys_path(root: Path) -> None:
    entry = str(root)
    if sys.path and sys.path[0] == entry:
        return
    while entry in sys.path:
        sys.path.remove(entry)
    sys.path.insert(0, entry)
    if entry not in _SYS_PATH_ADDED:
        _SYS_PATH_ADDED.append(entry)


def _import_checked(name: str, root: Path):
    """Import ``name`` from ``root`` (conflicts and missing third-party packages become clear errors)."""
    top = name.split(".")[0]
    if top in GENERIC_NAMES:
        _check_conflicts(root)
    _ensure_front_of_sys_path(root)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if missing in GENERIC_NAMES or missing == name.split(".")[0]:
            raise UpstreamAPIError(f"importing arcface_torch's {name} from {root} failed: {e}. "
                                   "The folder is incomplete; re-fetch it with "
                                   "python tools/fetch_arcface_torch.py --force") from e
        pip = _PIP_NAMES.get(missing, missing)
        raise UpstreamDependencyError(
            f"importing arcface_torch's {name} (from {root}) needs the Python package '{missing}', which is not "
            f"installed: pip install -r requirements.txt (or: pip install {pip}).") from e
    locs = _module_locations(module)
    if not any(_is_under(loc, root) for loc in locs):
        raise UpstreamConflictError(
            f"'{name}' was imported from {', '.join(map(str, locs)) or 'an unknown location'}, not from "
            f"arcface_torch at {root}: another folder on sys.path shadows it. Remove that folder from sys.path "
            "or rename its module.")
    return module


def _import_modules(root: Path) -> dict:
    key = str(root)
    with _LOCK:
        if key in _MODULES:
            return _MODULES[key]
        fix_numpy_aliases()  # before mxnet (imported by dataset.py) needs np.bool
        importlib.invalidate_caches()
        from ..utils import keep_torch_threads
        with keep_torch_threads():  # dataset.py imports mxnet, which sets torch to 1 thread
            mods = {name: _import_checked(name, root) for name in MODULES}
        _MODULES[key] = mods
        return mods


#: arcface_torch's own modules (imported under these top-level names), for warning filters.
_UPSTREAM_MODULES = r"^(dataset|partial_fc_v2|partial_fc|losses|lr_scheduler|backbones(\..*)?|eval(\..*)?|utils(\..*)?)$"
#: deprecation warnings upstream's code draws on current torch at every start (not ours to fix:
#: upstream is pinned and copied nowhere); hidden for upstream's modules only.
_UPSTREAM_NOISE = (r"`torch\.cuda\.amp\.autocast\(args\.\.\.\)` is deprecated",
                   r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated",
                   r"Decorating classes is deprecated")


def quiet_upstream_warnings() -> None:
    """Hide upstream's known deprecation warnings (raised from arcface_torch's modules only)."""
    for message in _UPSTREAM_NOISE:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning, module=_UPSTREAM_MODULES)


def load(root=None) -> types.SimpleNamespace:
    """Import arcface_torch (without import-time side effects) and return what the plugin uses.

    The result is cached per resolved root; a second call returns the same namespace. The fixes of
    :func:`apply_fixes` are applied. ``train_v2`` is never imported.

    Returns:
        A namespace with ``root``, ``get_model``, ``MXFaceDataset``, ``SyntheticDataset``,
        ``get_dataloader``, ``PartialFC_V2``, ``CombinedMarginLoss``, ``PolynomialLRWarmup``,
        ``get_config``, ``verification`` (the module), ``DistributedSampler`` (upstream's),
        ``setup_seed``, ``make_scheduler(optimizer, warmup_iters, total_iters, **kwargs)``,
        ``modules`` (name -> module) and ``fixes`` (names of the fixes applied).

    Raises:
        UpstreamNotFoundError: no arcface_torch folder (the message says how to get one).
        UpstreamAPIError: files or symbols missing (see :func:`check_api`).
        UpstreamConflictError: a module named ``utils``, ``eval``, ``dataset``, ... was already imported
            from elsewhere, or another arcface_torch folder was loaded in this process.
        UpstreamDependencyError: a package upstream imports (mxnet, scikit-learn, ...) is not installed.
    """
    root = find_root(root)
    key = str(root)
    quiet_upstream_warnings()
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        if _CACHE:
            other = next(iter(_CACHE))
            raise UpstreamConflictError(
                f"arcface_torch was already loaded from {other}; cannot also load {root} in the same process "
                "(its modules share top-level names). Use one folder per process.")
        changed = check_api(root)
        mods = _MODULES[key]
        sampler_mod = mods["utils.utils_distributed_sampler"]
        ns = types.SimpleNamespace(
            root=root,
            commit=PINNED_COMMIT,
            changed_files=changed,
            modules=dict(mods),
            get_model=mods["backbones"].get_model,
            MXFaceDataset=mods["dataset"].MXFaceDataset,
            SyntheticDataset=mods["dataset"].SyntheticDataset,
            get_dataloader=mods["dataset"].get_dataloader,
            PartialFC_V2=mods["partial_fc_v2"].PartialFC_V2,
            CombinedMarginLoss=mods["losses"].CombinedMarginLoss,
            PolynomialLRWarmup=mods["lr_scheduler"].PolynomialLRWarmup,
            get_config=mods["utils.utils_config"].get_config,
            verification=mods["eval.verification"],
            DistributedSampler=sampler_mod.DistributedSampler,
            setup_seed=getattr(sampler_mod, "setup_seed", None),
            fixes=[],
        )
        ns.make_scheduler = functools.partial(make_scheduler, scheduler_cls=ns.PolynomialLRWarmup)
        apply_fixes(ns)
        _CACHE[key] = ns
        return ns


def add_config_dirs(dirs, root=None, prepend: bool = True):
    """Let upstream's ``get_config("configs/<name>")`` find ``<name>.py`` in ``dirs`` too.

    ``get_config`` asserts its argument starts with ``configs/`` and imports ``configs.base`` then
    ``configs.<name>`` through the ``configs`` package, so extra folders are added to that package's
    ``__path__``: first (``prepend=True``, the folders win over upstream's files of the same name,
    ``base.py`` included) or last. Returns upstream's ``configs`` package.
    """
    root = load(root).root
    configs = _import_checked("configs", root)
    for d in (dirs if isinstance(dirs, (list, tuple)) else [dirs]):
        d = Path(d).expanduser().resolve()
        if not d.is_dir():
            raise QGFaceConfigError(f"config folder {d} does not exist: pass an existing folder of config files")
        entry = str(d)
        if entry in configs.__path__:
            continue
        if prepend:
            configs.__path__.insert(0, entry)
        else:
            configs.__path__.append(entry)
    importlib.invalidate_caches()
    return configs


# ---------------------------------------------------------------------------------------------- fixes

def fix_numpy_aliases(module=None) -> list:
    """Restore ``np.int``/``np.float``/``np.bool`` (removed in numpy 1.24) as the builtins, if absent.

    mxnet 1.9.1 uses ``np.bool`` at import; upstream's ``eval_ijbc.py`` and ``torch2onnx.py`` use
    ``np.int``/``np.float``. Returns the names added (none on numpy < 1.24, which still has them).
    """
    module = np if module is None else module
    added = []
    for name, builtin in (("int", int), ("float", float), ("bool", bool)):
        with warnings.catch_warnings():  # numpy 1.20-1.23 warn on access to these aliases
            warnings.simplefilter("ignore")
            present = hasattr(module, name)
        if not present:
            setattr(module, name, builtin)
            added.append(f"numpy.{name}")
    return added


def _interp1d_rejects_repeated_x(interpolate) -> bool:
    try:
        interpolate.interp1d(np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 2.0]), kind="slinear")
    except ValueError:
        return True
    return False


class RepeatedXLinear:
    """``interp1d(x, y, kind='slinear')`` as SciPy < 1.9 evaluated it when x has repeated values.

    SciPy before 1.9 built the order-1 spline directly from the stably sorted points (knots
    ``[x0, x0..x_{n-1}, x_{n-1}]``, coefficients y); later versions raise "Expect x to not have
    duplicates". That spline is: between two distinct x values, the line from the **last** point of
    the lower run of equal x to the **first** point of the upper run; at a repeated x value, the
    run's last y. (At a repeated *final* x, old SciPy returned a degenerate value; the run's last y is
    returned here.) For ``calculate_val`` (x = false-accept rate, y = threshold, both non-decreasing)
    the threshold for a FAR target inside a plateau gap is thus interpolated between the largest
    threshold at the lower FAR and the smallest threshold at the higher FAR.

    Values outside ``[min x, max x]`` raise ``ValueError``, like ``interp1d``'s default.
    """

    def __init__(self, x, y):
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        if x.ndim != 1 or y.shape != x.shape or x.size < 2:
            raise ValueError("RepeatedXLinear needs 1-D x and y of the same length >= 2")
        order = np.argsort(x, kind="mergesort")  # stable, as interp1d sorts
        x, y = x[order], y[order]
        starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
        ends = np.r_[starts[1:], x.size] - 1
        self.x = x[starts]
        self.y_first = y[starts]
        self.y_last = y[ends]

    def __call__(self, x_new):
        q = np.asarray(x_new, dtype=float)
        if np.any(q < self.x[0]):
            raise ValueError("A value in x_new is below the interpolation range.")
        if np.any(q > self.x[-1]):
            raise ValueError("A value in x_new is above the interpolation range.")
        if self.x.size == 1:
            return np.full(q.shape, self.y_last[0])
        i = np.clip(np.searchsorted(self.x, q, side="right") - 1, 0, self.x.size - 2)
        x0, x1 = self.x[i], self.x[i + 1]
        y0, y1 = self.y_last[i], self.y_first[i + 1]
        out = y0 + (q - x0) / (x1 - x0) * (y1 - y0)
        return np.where(q == x1, self.y_last[i + 1], out)


class _InterpolateStandIn(types.ModuleType):
    """``scipy.interpolate`` for upstream's ``eval/verification.py`` only: ``interp1d`` accepts repeated x
    for ``kind='slinear'`` (see :class:`RepeatedXLinear`); everything else is SciPy's."""

    _qgface_stand_in = True

    def __init__(self, wrapped):
        super().__init__("scipy.interpolate", self.__doc__)
        self._wrapped = wrapped

    def __getattr__(self, name):
        return getattr(self._wrapped, name)

    def interp1d(self, x, y, kind="linear", *args, **kwargs):
        if kind == "slinear" and not args and not kwargs:
            xa = np.asarray(x)
            if xa.ndim == 1 and xa.size >= 2 and np.unique(xa).size < xa.size and np.ndim(y) == 1:
                return RepeatedXLinear(x, y)
        return self._wrapped.interp1d(x, y, kind, *args, **kwargs)


def apply_fixes(ns) -> list:
    """Fix upstream for current libraries, each fix only when needed; idempotent. Returns the fixes applied now.

    * ``verification-interp1d``: if SciPy's ``interp1d`` rejects repeated x (SciPy >= 1.9),
      ``ns.verification.interpolate`` becomes a stand-in whose ``interp1d(kind='slinear')`` evaluates
      such data as old SciPy did (:class:`RepeatedXLinear`); only that module's name is rebound.
    * ``numpy.int``/``numpy.float``/``numpy.bool``: see :func:`fix_numpy_aliases`.
    """
    applied = fix_numpy_aliases()
    verification = getattr(ns, "verification", None)
    current = getattr(verification, "interpolate", None)
    if current is not None and not getattr(current, "_qgface_stand_in", False) \
            and _interp1d_rejects_repeated_x(current):
        verification.interpolate = _InterpolateStandIn(current)
        applied.append("verification-interp1d")
    if hasattr(ns, "fixes"):
        ns.fixes.extend(applied)
    return applied


# ---------------------------------------------------------------------------------- LR scheduler fix

def _lr_scheduler_base():
    import torch
    return torch.optim.lr_scheduler.LRScheduler


def _scheduler_init_owner(cls):
    """The class whose ``__init__`` a ``super().__init__`` from ``cls`` reaches (LRScheduler in torch 2.x)."""
    for klass in cls.__mro__[1:]:
        if "__init__" in vars(klass):
            return klass
    return _lr_scheduler_base()


def _drop_verbose(init):
    @functools.wraps(init)
    def __init__(self, *args, verbose=None, **kwargs):  # noqa: N807 (stands in for __init__)
        return init(self, *args, **kwargs)

    __init__._qgface_drops_verbose = True
    return __init__


def _needs_verbose_fix(owner) -> bool:
    init = vars(owner).get("__init__")
    if init is None or getattr(init, "_qgface_drops_verbose", False):
        return False
    return "verbose" not in _params(init)


@contextlib.contextmanager
def lr_scheduler_compat(scheduler_cls=None):
    """While active, ``LRScheduler.__init__`` accepts and ignores ``verbose`` -- only if torch removed it (2.7+).

    ``PolynomialLRWarmup.__init__`` passes ``verbose=verbose`` to its base; torch >= 2.7 raises
    ``TypeError`` on it. The base ``__init__`` is wrapped for the duration of the block and restored
    after. Yields whether the wrapper was installed.
    """
    owner = _scheduler_init_owner(scheduler_cls) if scheduler_cls is not None else _lr_scheduler_base()
    if not _needs_verbose_fix(owner):
        yield False
        return
    original = vars(owner)["__init__"]
    owner.__init__ = _drop_verbose(original)
    try:
        yield True
    finally:
        owner.__init__ = original


def install_lr_scheduler_compat() -> bool:
    """Process-wide :func:`lr_scheduler_compat` (for launchers running upstream scripts). Idempotent.

    Returns True when the wrapper is in place (now or from an earlier call), False when torch still
    accepts ``verbose`` and nothing was needed.
    """
    owner = _lr_scheduler_base()
    init = vars(owner).get("__init__")
    if getattr(init, "_qgface_drops_verbose", False):
        return True
    if not _needs_verbose_fix(owner):
        return False
    owner.__init__ = _drop_verbose(init)
    return True


def make_scheduler(optimizer, warmup_iters, total_iters, *, scheduler_cls=None, **kwargs):
    """Upstream's ``PolynomialLRWarmup(optimizer, warmup_iters, total_iters, **kwargs)``, on any torch.

    LR rises linearly from 0 to the base LR over ``warmup_iters`` steps, then falls linearly to 0 at
    ``total_iters`` (power 1). Note upstream's quirk: before the first ``step()`` the LR is the full
    base LR, not 0. ``scheduler_cls`` defaults to the class of :func:`load`'s upstream.
    """
    if scheduler_cls is None:
        scheduler_cls = load().PolynomialLRWarmup
    with lr_scheduler_compat(scheduler_cls):
        return scheduler_cls(optimizer, warmup_iters=warmup_iters, total_iters=total_iters, **kwargs)


# ---------------------------------------------------------------------------------------- CPU shims

def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def _mark(fn):
    fn._qgface_shim = True
    return fn


def _tensor_cuda_identity(self, *args, **kwargs):
    """Stand-in for ``Tensor.cuda`` without CUDA: the tensor itself."""
    return self


_tensor_cuda_identity = _mark(_tensor_cuda_identity)


class _DummyStream:
    """Stand-in for ``torch.cuda.Stream`` without CUDA: every method is a no-op."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, *args, **kwargs):
        pass

    def synchronize(self):
        pass

    def record_event(self, *args, **kwargs):
        return None

    def query(self):
        return True


def _is_cuda_device(device) -> bool:
    import torch
    if isinstance(device, bool):
        return False
    if isinstance(device, int):
        return True
    if isinstance(device, str):
        return device.startswith("cuda")
    if isinstance(device, torch.device):
        return device.type == "cuda"
    return False


def _cpu_patches(sampler_module=None) -> list:
    """(owner, attribute, replacement) for every CPU shim (research arcface_torch.md section 8.2)."""
    import torch
    import torch.distributed as dist

    original_init_pg = dist.init_process_group

    @_mark
    @functools.wraps(original_init_pg)
    def init_process_group(*args, **kwargs):
        if args:
            if "nccl" in str(args[0]).lower():
                args = ("gloo",) + tuple(args[1:])
        elif "nccl" in str(kwargs.get("backend", "")).lower():
            kwargs["backend"] = "gloo"
        return original_init_pg(*args, **kwargs)

    @_mark
    def module_cuda(self, device=None):
        return self

    @_mark
    def set_device(device):
        return None

    @_mark
    def current_stream(device=None):
        return _DummyStream()

    @_mark
    def stream(s=None):
        return contextlib.nullcontext()

    original_to = torch.Tensor.to

    @_mark
    @functools.wraps(original_to)
    def tensor_to(self, *args, **kwargs):
        if "device" in kwargs and _is_cuda_device(kwargs["device"]):
            kwargs["device"] = "cpu"
        if args and _is_cuda_device(args[0]):
            args = ("cpu",) + tuple(args[1:])
        return original_to(self, *args, **kwargs)

    base_ddp = torch.nn.parallel.DistributedDataParallel

    class CpuDistributedDataParallel(base_ddp):
        """DistributedDataParallel that ignores ``device_ids``/``output_device`` (CPU modules need None)."""

        _qgface_shim = True

        def __init__(self, module, device_ids=None, output_device=None, *args, **kwargs):
            super().__init__(module, None, None, *args, **kwargs)

    patches = [
        (dist, "init_process_group", init_process_group),
        (torch.Tensor, "cuda", _tensor_cuda_identity),
        (torch.nn.Module, "cuda", module_cuda),
        (torch.cuda, "set_device", _mark(set_device)),
        (torch.cuda, "Stream", _DummyStream),
        (torch.cuda, "current_stream", current_stream),
        (torch.cuda, "stream", stream),
        (torch.Tensor, "to", tensor_to),
        (torch.nn.parallel, "DistributedDataParallel", CpuDistributedDataParallel),
    ]
    if sampler_module is not None and hasattr(sampler_module, "sync_random_seed"):
        fn = sampler_module.sync_random_seed
        defaults = list(fn.__defaults__ or ())
        names = _params(fn)
        if "device" in names and defaults:
            pos = names.index("device") - (len(names) - len(defaults))
            if 0 <= pos < len(defaults) and defaults[pos] != "cpu":
                defaults[pos] = "cpu"
                patches.append((fn, "__defaults__", tuple(defaults)))
    return patches


_MISSING = object()


def _apply(patches) -> list:
    """Apply the patches not already in place; returns the undo records."""
    undo = []
    for owner, name, new in patches:
        current = getattr(owner, name, _MISSING)
        if getattr(current, "_qgface_shim", False) or current is new:
            continue
        own = vars(owner).get(name, _MISSING) if isinstance(owner, type) else current
        setattr(owner, name, new)
        undo.append((owner, name, own))
    return undo


def _undo(records) -> None:
    for owner, name, old in reversed(records):
        if old is _MISSING:
            with contextlib.suppress(AttributeError):
                delattr(owner, name)
        else:
            setattr(owner, name, old)


_INSTALLED: list = []  # undo records of install_cpu_shim (kept: process-wide)


def _sampler_module(ns):
    if ns is None:
        return None
    return getattr(ns, "modules", {}).get("utils.utils_distributed_sampler")


@contextlib.contextmanager
def cpu_shim(ns=None):
    """While active, upstream's hard-coded CUDA/NCCL calls work on CPU -- only when CUDA is unavailable.

    Patches (restored on exit): ``torch.distributed.init_process_group`` with an NCCL backend uses gloo;
    ``Tensor.cuda``/``Module.cuda`` return their argument; ``torch.cuda.set_device`` does nothing;
    ``torch.cuda.Stream``/``current_stream``/``stream`` are dummies; ``Tensor.to(device=<int or cuda>)``
    goes to the CPU; ``torch.nn.parallel.DistributedDataParallel`` ignores ``device_ids``; and, given
    :func:`load`'s namespace, upstream's ``sync_random_seed`` defaults to ``device="cpu"``.
    Yields whether anything was patched (False with CUDA, or when :func:`install_cpu_shim` already did).
    """
    if _cuda_available():
        yield False
        return
    undo = _apply(_cpu_patches(_sampler_module(ns)))
    try:
        yield bool(undo)
    finally:
        _undo(undo)


def install_cpu_shim(ns=None) -> bool:
    """Process-wide :func:`cpu_shim` for launchers; idempotent (a later call with ``ns`` adds the sampler default).

    Not undone. Call it outside any ``cpu_shim()`` block: patches that block already made are not
    re-applied here and so end with the block.

    Returns True when the shim is in effect (installed now or earlier), False when CUDA is available
    and nothing was done.
    """
    if _cuda_available():
        return False
    with _LOCK:
        _INSTALLED.extend(_apply(_cpu_patches(_sampler_module(ns))))
    return True


@contextlib.contextmanager
def partial_fc_cpu_shim():
    """While active, ``Tensor.cuda`` returns the tensor itself -- only when CUDA is unavailable.

    Enough for ``PartialFC_V2`` on CPU: its ``sample()`` and gather buffers call ``.cuda()``; everything
    else follows the input's device. Yields whether it patched anything.
    """
    if _cuda_available():
        yield False
        return
    import torch
    undo = _apply([(torch.Tensor, "cuda", _tensor_cuda_identity)])
    try:
        yield bool(undo)
    finally:
        _undo(undo)


def install_tensorboard_fallback() -> bool:
    """Make ``from torch.utils.tensorboard import SummaryWriter`` work without the ``tensorboard`` package.

    Only when ``tensorboard`` is not installed and ``tensorboardX`` is: registers a
    ``torch.utils.tensorboard`` module whose ``SummaryWriter`` is tensorboardX's (same API and event
    files). Returns whether the stand-in is in place.
    """
    existing = sys.modules.get("torch.utils.tensorboard")
    if existing is not None:
        return bool(getattr(existing, "_qgface_stand_in", False))
    if importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is None:
        return False
    import tensorboardX
    import torch.utils

    module = types.ModuleType("torch.utils.tensorboard", "tensorboardX standing in for torch.utils.tensorboard.")
    module.SummaryWriter = tensorboardX.SummaryWriter
    module._qgface_stand_in = True
    sys.modules["torch.utils.tensorboard"] = module
    torch.utils.tensorboard = module
    return True


def _sample_colours_from_colourmap(n_colours, colour_map):
    """menpo's ``sample_colours_from_colourmap``: ``n_colours`` RGB tuples evenly spaced along a matplotlib
    colormap (``i / n_colours``, i = 0..n-1)."""
    import matplotlib
    cmap = matplotlib.colormaps[colour_map]
    return [cmap(i / n_colours)[:3] for i in range(int(n_colours))]


def install_menpo_stub() -> bool:
    """Make ``from menpo.visualize.viewmatplotlib import sample_colours_from_colourmap`` work without menpo.

    Only when ``import menpo`` fails: registers stub modules ``menpo``, ``menpo.visualize`` and
    ``menpo.visualize.viewmatplotlib`` (the last with a matplotlib-backed
    ``sample_colours_from_colourmap(n, name)``, all that upstream's ``eval_ijbc.py`` uses: the ROC
    plot's line colours). Returns whether the stub is in place (now or from an earlier call).
    """
    existing = sys.modules.get("menpo")
    if existing is not None:
        return bool(getattr(existing, "_qgface_stand_in", False))
    try:
        importlib.import_module("menpo")
        return False
    except ImportError:
        pass
    doc = "Stand-in for menpo (not installed); only what arcface_torch's eval_ijbc.py uses."
    top = types.ModuleType("menpo", doc)
    visualize = types.ModuleType("menpo.visualize", doc)
    viewmatplotlib = types.ModuleType("menpo.visualize.viewmatplotlib", doc)
    viewmatplotlib.sample_colours_from_colourmap = _sample_colours_from_colourmap
    top.visualize, visualize.viewmatplotlib = visualize, viewmatplotlib
    for module in (top, visualize, viewmatplotlib):
        module._qgface_stand_in = True
        sys.modules[module.__name__] = module
    return True


def _main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        root = find_root(argv[0] if argv else None)
        changed = check_api(root)
    except QGFaceConfigError as e:
        print(e, file=sys.stderr)
        return 2
    note = f" ({len(changed)} file(s) differ from the pin)" if changed else ""
    print(f"arcface_torch API of commit {PINNED_COMMIT[:12]}: OK{note}", file=sys.stderr)
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
