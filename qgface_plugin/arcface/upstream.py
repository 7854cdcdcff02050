"""Importing insightface's ``recognition/arcface_torch`` ("upstream") into this process.

:func:`load` finds the folder (:func:`qgface_plugin.arcface.checkout.find_root`), checks it
(:func:`check_api`: files and hashes against the pin, then names and arguments of the imported modules),
applies :func:`qgface_plugin.arcface.compat.apply_fixes` and returns the handful of upstream objects the
plugin uses, once per process.

Upstream's modules have flat, generic top-level names (``utils``, ``eval``, ``dataset``, ``losses``,
``backbones``, ``configs``: :data:`GENERIC_NAMES`), so importing them means putting the upstream folder at the
front of ``sys.path``; :func:`load` refuses to go on if a module of one of those names was already imported
from somewhere else (:class:`UpstreamConflictError`), or if a package upstream imports is missing
(:class:`UpstreamDependencyError`). ``train_v2`` is never imported (it initialises NCCL at import time).
:func:`add_config_dirs` lets upstream's ``get_config`` find configs in other folders;
:func:`quiet_upstream_warnings` hides upstream's known deprecation warnings.

Nothing happens at import time. ``python -m qgface_plugin.arcface.upstream [ROOT]`` prints the root found and
runs :func:`check_api` on it (exit 2 when it is missing or fails the check).
"""
from __future__ import annotations

import functools
import importlib
import sys
import threading
import types
import warnings
from pathlib import Path

from ..errors import QGFaceConfigError
from . import checkout, compat

__all__ = ["GENERIC_NAMES", "MODULES", "UpstreamConflictError", "UpstreamDependencyError", "check_api", "load",
           "add_config_dirs", "quiet_upstream_warnings"]

#: upstream's top-level module names that can clash with other code in the same process.
GENERIC_NAMES = ("backbones", "dataset", "partial_fc_v2", "losses", "lr_scheduler", "utils", "eval", "configs")
#: the modules load() imports, in order (never train_v2: it initialises NCCL at import time).
MODULES = ("utils.utils_distributed_sampler", "utils.utils_config", "backbones", "dataset", "partial_fc_v2",
           "losses", "lr_scheduler", "eval.verification")

#: pip names of the third-party packages upstream imports, for the error message when one is missing.
_PIP_NAMES = {"sklearn": "scikit-learn", "mxnet": "mxnet==1.9.1", "cv2": "opencv-python-headless",
              "easydict": "easydict", "torchvision": "torchvision", "scipy": "scipy", "timm": "timm"}

_LOCK = threading.RLock()
_MODULES: dict = {}   # str(root) -> {name: module}
_CACHE: dict = {}     # str(root) -> namespace


class UpstreamConflictError(QGFaceConfigError):
    """A module with one of arcface_torch's generic top-level names was imported from elsewhere."""


class UpstreamDependencyError(QGFaceConfigError):
    """A third-party package that arcface_torch imports is not installed."""


# --------------------------------------------------------------------------------------------- import

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
            raise checkout.UpstreamAPIError(f"importing arcface_torch's {name} from {root} failed: {e}. "
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
        compat.fix_numpy_aliases()  # before mxnet (imported by dataset.py) needs np.bool
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


def check_api(root=None) -> list:
    """Check that ``root`` (default: :func:`~qgface_plugin.arcface.checkout.find_root`) has the pinned commit's API.

    :func:`~qgface_plugin.arcface.checkout.check_files` (the files in ``REQUIRED_FILES`` exist; their git blob
    hashes are compared with ``PINNED_BLOBS``, a difference warns with ``UpstreamVersionWarning`` except for
    files our patches modify), then the modules are imported (as :func:`load` does) and
    :func:`~qgface_plugin.arcface.checkout.check_symbols` checks the classes, functions, arguments and
    attributes the plugin uses.

    Returns:
        The files whose content differs from the pinned commit (each also warned about).

    Raises:
        UpstreamNotFoundError: ``root`` holds no arcface_torch folder.
        UpstreamAPIError: a file, symbol, argument or attribute is missing.
        UpstreamConflictError, UpstreamDependencyError: see :func:`load`.
    """
    root = checkout.find_root(root)
    changed = checkout.check_files(root)
    checkout.check_symbols(_import_modules(root))
    return changed


def load(root=None) -> types.SimpleNamespace:
    """Import arcface_torch (without import-time side effects) and return what the plugin uses.

    The result is cached per resolved root; a second call returns the same namespace. The fixes of
    :func:`qgface_plugin.arcface.compat.apply_fixes` are applied. ``train_v2`` is never imported.

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
    root = checkout.find_root(root)
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
            commit=checkout.PINNED_COMMIT,
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
        ns.make_scheduler = functools.partial(compat.make_scheduler, scheduler_cls=ns.PolynomialLRWarmup)
        compat.apply_fixes(ns)
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


def _main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        root = checkout.find_root(argv[0] if argv else None)
        changed = check_api(root)
    except QGFaceConfigError as e:
        print(e, file=sys.stderr)
        return 2
    note = f" ({len(changed)} file(s) differ from the pin)" if changed else ""
    print(f"arcface_torch API of commit {checkout.PINNED_COMMIT[:12]}: OK{note}", file=sys.stderr)
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
