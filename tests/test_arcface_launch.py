"""qgface_plugin.arcface.launch: the GPU switches upstream's train_v2 sets (cuDNN autotuning, TF32), set only for
a CUDA device and restored here after each test; the DDP arguments."""
import pytest
import torch
from easydict import EasyDict as edict

from qgface_plugin.arcface.launch import configure_device, ddp_kwargs

_FLAGS = ("cudnn.benchmark", "cudnn.allow_tf32", "cuda.matmul.allow_tf32")


def _get(name):
    obj = torch.backends
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _set(name, value):
    *path, last = name.split(".")
    obj = torch.backends
    for part in path:
        obj = getattr(obj, part)
    setattr(obj, last, value)


@pytest.fixture
def flags():
    before = {n: _get(n) for n in _FLAGS}
    for n in _FLAGS:
        _set(n, False)
    yield
    for n, v in before.items():
        _set(n, v)


@pytest.mark.parametrize("tf32", [True, False])
def test_a_cuda_device_gets_cudnn_autotuning_and_the_configs_tf32(flags, tf32):
    # the flags are process-wide switches: no CUDA call is made, so this runs on a CPU-only machine
    configure_device(edict(tf32=tf32), torch.device("cuda", 0))
    assert {n: _get(n) for n in _FLAGS} == {"cudnn.benchmark": True, "cudnn.allow_tf32": tf32,
                                            "cuda.matmul.allow_tf32": tf32}


def test_a_cpu_device_leaves_every_switch_alone(flags):
    configure_device(edict(tf32=True), torch.device("cpu"))
    assert not any(_get(n) for n in _FLAGS)


def test_ddp_arguments_are_a_static_graph_without_per_forward_buffer_sync():
    kwargs = ddp_kwargs()
    assert kwargs.pop("static_graph") is True and "find_unused_parameters" not in kwargs
    assert kwargs in ({"forward_sync_buffers": False}, {"broadcast_buffers": False})
