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

mxnet is optional: where it cannot be imported (not installed, or the numpy-2 profile of
``requirements-nomx.txt``), ``dataset.py`` and ``eval/verification.py`` (both ``import mxnet`` at module level)
are imported against :class:`MXNetStandIn`, so every symbol exists and :func:`check_api` checks them all; the
first call into mxnet (``MXFaceDataset(...)``, ``verification.load_bin``) raises :class:`UpstreamDependencyError`
naming ``config.record_reader = "python"``. ``ns.mxnet_missing`` says why (None where mxnet imports).

:func:`add_config_dirs` lets upstream's ``get_config`` find configs in other folders;
:func:`quiet_upstream_warnings` hides upstream's known deprecation warnings.

Nothing happens at import time. ``python -m qgface_plugin.arcface.upstream [ROOT]`` prints the root found and
runs :func:`check_api` on it (exit 2 when it is missing or fails the check).
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import threading
import types
import warnings
from pathlib import Path

from ..errors import QGFaceConfigError
from . import checkout, compat

__all__ = ["GENERIC_NAMES", "MODULES", "UpstreamConflictError", "UpstreamDependencyError", "MXNetStandIn",
           "mxnet_missing", "check_api", "load", "add_config_dirs", "quiet_upstream_warnings"]

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
_MXNET_MISSING: dict = {}  # str(root) -> why mxnet could not be imported when the modules were (None: it could)


class UpstreamConflictError(QGFaceConfigError):
    """A module with one of arcface_torch's generic top-level names was imported from elsewhere."""


class UpstreamDependencyError(QGFaceConfigError):
    """A third-party package that arcface_torch imports is not installed."""


# ------------------------------------------------------------------------------------- optional mxnet

def mxnet_missing():
    """Why ``import mxnet`` fails in this process (``"ImportError: ..."``), or None when it imports."""
    from ..utils import import_mxnet
    try:
        import_mxnet()
    except ImportError as e:
        first_line = (str(e).splitlines() or ["(no message)"])[0]
        return f"{type(e).__name__}: {first_line}"
    return None


def _mxnet_error(name: str, reason: str) -> UpstreamDependencyError:
    return UpstreamDependencyError(
        f"arcface_torch called {name}, but mxnet cannot be imported here ({reason}). Its dataset.MXFaceDataset "
        "(config.record_reader = 'mxnet') and eval.verification.load_bin need mxnet: set config.record_reader = "
        "'python' (or 'auto'), which reads train.rec without mxnet, or install the default profile with mxnet: "
        "pip install -r requirements.txt.")


class _MXNetName:
    """An attribute of :class:`MXNetStandIn` (``mx.recordio``, ``nd.transpose``, ...): deeper attributes are
    stand-ins too; calling one raises :class:`UpstreamDependencyError`."""

    def __init__(self, name: str, reason: str):
        self._name, self._reason = name, reason

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _MXNetName(f"{self._name}.{attr}", self._reason)

    def __call__(self, *args, **kwargs):
        raise _mxnet_error(f"{self._name}()", self._reason)

    def __repr__(self):
        return f"<mxnet stand-in {self._name} (mxnet cannot be imported: {self._reason})>"


class MXNetStandIn(types.ModuleType):
    """What arcface_torch's module-level ``import mxnet as mx`` / ``from mxnet import ndarray as nd`` bind where
    mxnet cannot be imported: any attribute is a stand-in, and calling one (``mx.recordio.MXIndexedRecordIO``
    in ``MXFaceDataset.__init__``, ``mx.image.imdecode`` in ``load_bin``) raises :class:`UpstreamDependencyError`.
    It is in ``sys.modules`` only while those modules are imported: ``import mxnet`` elsewhere still fails."""

    def __init__(self, reason: str):
        super().__init__("mxnet", f"stand-in for mxnet, which cannot be imported here ({reason})")
        self.__dict__["_reason"] = reason

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _MXNetName(f"mxnet.{attr}", self._reason)

    def __repr__(self):
        return f"<mxnet stand-in (mxnet cannot be imported: {self._reason})>"


_ABSENT = object()


@contextlib.contextmanager
def _mxnet_stand_in(reason):
    """While the body runs, ``import mxnet`` gives an :class:`MXNetStandIn` (nothing changes when ``reason`` is
    None: mxnet imports); afterwards ``sys.modules["mxnet"]`` is as it was (absent, or None when blocked)."""
    if reason is None:
        yield
        return
    saved = sys.modules.get("mxnet", _ABSENT)
    sys.modules["mxnet"] = MXNetStandIn(reason)
    try:
        yield
    finally:
        if saved is _ABSENT:
            sys.modules.pop("mxnet", None)
        else:
            sys.modules["mxnet"] = saved


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
            missing = mxnet_missing()
            with _mxnet_stand_in(missing):  # dataset.py and eval/verification.py import mxnet at module level
                mods = {name: _import_checked(name, root) for name in MODULES}
        _MODULES[key], _MXNET_MISSING[key] = mods, missing
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
    files our patches modify), then the modules are imported (as :func:`load` does; without mxnet against
    :class:`MXNetStandIn`, so the same symbols are checked) and
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
        ``modules`` (name -> module), ``fixes`` (names of the fixes applied) and ``mxnet_missing`` (None
        where mxnet imports; else why not: then ``MXFaceDataset(...)`` and ``verification.load_bin`` raise
        :class:`UpstreamDependencyError`, and the rest works).

    Raises:
        UpstreamNotFoundError: no arcface_torch folder (the message says how to get one).
        UpstreamAPIError: files or symbols missing (see :func:`check_api`).
        UpstreamConflictError: a module named ``utils``, ``eval``, ``dataset``, ... was already imported
            from elsewhere, or another arcface_torch folder was loaded in this process.
        UpstreamDependencyError: a package upstream imports (scikit-learn, ...) is not installed (mxnet is
            optional, see above).
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
            mxnet_missing=_MXNET_MISSING.get(key),
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
