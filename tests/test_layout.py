"""The package's layers and what each may import (ARCHITECTURE.md), read from the code's own import statements.

- the core (the modules at the package top) imports no layer: neither ``arcface`` nor ``eval`` nor
  ``synthetic`` nor ``formats`` nor ``export``; its third-party imports are torch and numpy (the image
  pipeline, ``views.py`` and ``degradation.py``, also OpenCV and Pillow);
- nothing outside ``qgface_plugin/arcface/`` imports arcface_torch (its modules are loaded by name there);
- each layer imports only the layers below it (the ``MAY_IMPORT`` table);
- no package module is over ``MAX_LINES`` lines.
The scan is static (``ast``), so an import inside a function counts as much as one at the top.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from _proc import ROOT

PKG = ROOT / "qgface_plugin"

# layer -> the layers it may import ("core" = the package top, shared basics included)
MAY_IMPORT = {
    "core": {"core"},
    "formats": {"core", "formats"},
    "arcface": {"core", "formats", "arcface"},
    "export": {"core", "arcface"},
    "eval": {"core", "formats", "arcface", "export", "eval"},
    "synthetic": {"core", "formats", "synthetic"},
    "study": {"core", "formats", "arcface", "export", "eval", "synthetic", "study"},
}
LAYERS = set(MAY_IMPORT) - {"core", "export"}
# arcface_torch's top-level module names (what upstream's sys.path entry makes importable)
ARCFACE_TORCH_MODULES = {"backbones", "dataset", "partial_fc_v2", "partial_fc", "losses", "lr_scheduler",
                         "train_v2", "train", "eval", "utils"}
CORE_THIRD_PARTY = {"torch", "numpy"}
# the image pipeline decodes, resizes and JPEG-codes with OpenCV and Pillow; utils.import_mxnet imports mxnet
# lazily for the layers that read records with it (the core never calls it)
CORE_THIRD_PARTY_EXTRA = {"views.py": {"cv2"}, "degradation.py": {"cv2", "PIL"}, "utils.py": {"mxnet"}}
MAX_LINES = 520


def _modules():
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _layer(path: Path) -> str:
    rel = path.relative_to(PKG)
    if len(rel.parts) > 1:
        return rel.parts[0]
    return "export" if rel.name == "export.py" else "core"


def _imports(path: Path):
    """(absolute module name, line) of every import in ``path``; relative imports resolved."""
    rel = path.relative_to(ROOT).with_suffix("")
    package = list(rel.parts[:-1])                   # an __init__ is its own package: the same folder
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if node.level and not node.module:        # from . import a, b: each name is a module
                for a in node.names:
                    yield f"{mod}.{a.name}", node.lineno
            else:
                yield mod, node.lineno


def _target_layer(module: str):
    parts = module.split(".")
    if parts[0] != "qgface_plugin":
        return None
    if len(parts) == 1:
        return "core"
    if parts[1] in LAYERS:
        return parts[1]
    return "export" if parts[1] == "export" else "core"


def test_the_scan_sees_relative_and_absolute_imports():
    # the checker itself, on a module with relative imports of both depths
    pkg = PKG / "arcface" / "training.py"
    names = {m for m, _ in _imports(pkg)}
    assert "qgface_plugin.errors" in names               # from ..errors import ...
    assert any(n.startswith("qgface_plugin.arcface.") for n in names)
    assert _target_layer("qgface_plugin.arcface.hooks") == "arcface"
    assert _target_layer("qgface_plugin.loss") == "core" and _target_layer("qgface_plugin") == "core"
    assert _target_layer("qgface_plugin.export") == "export" and _target_layer("numpy") is None


def test_each_layer_imports_only_the_layers_below_it():
    bad = []
    for path in _modules():
        src = _layer(path)
        for mod, line in _imports(path):
            dst = _target_layer(mod)
            if dst is not None and dst not in MAY_IMPORT[src]:
                bad.append(f"{path.relative_to(ROOT)}:{line} ({src}) imports {mod} ({dst})")
    assert not bad, "imports across the layers' rules (ARCHITECTURE.md):\n" + "\n".join(bad)


def test_the_core_imports_only_torch_and_numpy():
    bad = []
    for path in _modules():
        if _layer(path) != "core":
            continue
        allowed = CORE_THIRD_PARTY | CORE_THIRD_PARTY_EXTRA.get(path.name, set())
        for mod, line in _imports(path):
            top = mod.split(".")[0]
            if top == "qgface_plugin" or top in sys.stdlib_module_names or top == "__future__":
                continue
            if top not in allowed:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "the core imports only torch/numpy:\n" + "\n".join(bad)


def test_only_the_arcface_layer_imports_arcface_torch():
    bad = []
    files = [p for p in _modules() if _layer(p) != "arcface"]
    files += sorted((ROOT / "tools").glob("*.py")) + sorted((ROOT / "recognition_configs").glob("*.py"))
    for path in files:
        for mod, line in _imports(path):
            if mod.split(".")[0] in ARCFACE_TORCH_MODULES:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
        text = path.read_text()
        if "import_module(" in text and any(f'"{m}' in text or f"'{m}" in text for m in ("partial_fc_v2",
                                                                                        "backbones")):
            bad.append(f"{path.relative_to(ROOT)} loads an arcface_torch module by name")
    assert not bad, "arcface_torch is imported only in qgface_plugin/arcface/:\n" + "\n".join(bad)


def test_importing_the_core_loads_no_layer():
    code = ("import sys, qgface_plugin\n"
            "from qgface_plugin import QGFaceLoss, ProxyQueue, QualityPartition, TwoViewTransform\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[:2] in "
            "[['qgface_plugin', x] for x in ('arcface', 'eval', 'synthetic', 'formats', 'export')])\n"
            "third = sorted({m.split('.')[0] for m in sys.modules} & {'mxnet', 'easydict', 'onnx', 'insightface',"
            " 'sklearn', 'skimage', 'backbones', 'partial_fc_v2'})\n"
            "print(bad, third)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[] []", out.stdout


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_modules_stay_small(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (split it by idea; limit {MAX_LINES})"
