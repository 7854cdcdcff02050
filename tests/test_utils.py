"""qgface_plugin.utils: importing mxnet keeps torch's thread count (skipped where mxnet cannot be imported)."""
import subprocess
import sys

import pytest

CODE = """
import torch
before = torch.get_num_threads()
{imp}
print(before, torch.get_num_threads())
"""


def _run(imp):
    return subprocess.run([sys.executable, "-c", CODE.format(imp=imp)], capture_output=True, text=True, timeout=120)


def _threads(imp):
    r = _run(imp)
    assert r.returncode == 0, r.stderr
    return tuple(int(v) for v in r.stdout.strip().splitlines()[-1].split())


def test_import_mxnet_keeps_torch_threads():
    probe = _run("import mxnet")
    if probe.returncode != 0:  # not installed, or an mxnet that fails to load (numpy >= 1.24: np.bool)
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"mxnet cannot be imported ({last[:100]})")
    before, after = _threads("from qgface_plugin.utils import import_mxnet; import_mxnet()")
    assert after == before
    if before == 1:
        pytest.skip("one CPU thread: nothing to lose")
    # the reason for the helper: a plain import drops torch to one thread (mxnet 1.9's OpenMP runtime)
    assert _threads("import mxnet") == (before, 1)


def test_an_mxnet_that_fails_to_load_is_an_import_error(tmp_path):
    """An installed mxnet that breaks at import (mxnet 1.9.1 on numpy >= 1.24: an AttributeError) is an
    ImportError for the callers that fall back to the mxnet-free code; the original error is its cause."""
    fake = tmp_path / "mxnet"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise AttributeError(\"module 'numpy' has no attribute 'bool'\")\n")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
            "from qgface_plugin.utils import import_mxnet\n"
            "try:\n"
            "    import_mxnet()\n"
            "except ImportError as e:\n"
            "    print(type(e.__cause__).__name__, e.name, 'fails to load' in str(e), \"'bool'\" in str(e))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["AttributeError", "mxnet", "True", "True"], r.stdout
