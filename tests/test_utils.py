"""qgface_plugin.utils: importing mxnet keeps torch's thread count."""
import subprocess
import sys

import pytest

CODE = """
import torch
before = torch.get_num_threads()
{imp}
print(before, torch.get_num_threads())
"""


def _threads(imp):
    r = subprocess.run([sys.executable, "-c", CODE.format(imp=imp)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return tuple(int(v) for v in r.stdout.strip().splitlines()[-1].split())


def test_import_mxnet_keeps_torch_threads():
    before, after = _threads("from qgface_plugin.utils import import_mxnet; import_mxnet()")
    assert after == before
    if before == 1:
        pytest.skip("one CPU thread: nothing to lose")
    # the reason for the helper: a plain import drops torch to one thread (mxnet 1.9's OpenMP runtime)
    assert _threads("import mxnet") == (before, 1)
