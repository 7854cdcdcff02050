"""qgface_plugin.arcface.cpu_shim: upstream's CUDA/NCCL calls on a machine without CUDA.

The test marked ``upstream`` runs upstream's PartialFC_V2 (``ARCFACE_TORCH_ROOT``) and skips without it.
"""
from __future__ import annotations

import datetime
import math
import types

import pytest
import torch

from _proc import free_port
from qgface_plugin.arcface import cpu_shim


def test_cpu_shim_patches_and_restores(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the CPU shim does nothing (checked in the next test)")
    import torch.distributed as dist
    saved = {"tensor_cuda": torch.Tensor.cuda, "module_cuda": torch.nn.Module.cuda, "to": torch.Tensor.to,
             "init": dist.init_process_group, "ddp": torch.nn.parallel.DistributedDataParallel,
             "stream": torch.cuda.Stream, "set_device": torch.cuda.set_device}
    sampler = types.SimpleNamespace(sync_random_seed=lambda seed=None, device="cuda": device)
    ns = types.SimpleNamespace(modules={"utils.utils_distributed_sampler": sampler})
    with cpu_shim.cpu_shim(ns) as active:
        assert active
        t = torch.ones(2)
        assert t.cuda() is t and t.to(device=0).device.type == "cpu" and t.to("cuda:1").device.type == "cpu"
        assert t.to(torch.float64).dtype == torch.float64
        lin = torch.nn.Linear(2, 2)
        assert lin.cuda() is lin
        torch.cuda.set_device(3)
        s = torch.cuda.Stream(0)
        torch.cuda.current_stream().wait_stream(s)
        with torch.cuda.stream(s):
            pass
        assert sampler.sync_random_seed() == "cpu"
        with cpu_shim.cpu_shim(ns) as nested:  # already active: nothing more to do
            assert not nested
    assert torch.Tensor.cuda is saved["tensor_cuda"] and torch.nn.Module.cuda is saved["module_cuda"]
    assert torch.Tensor.to is saved["to"] and dist.init_process_group is saved["init"]
    assert torch.nn.parallel.DistributedDataParallel is saved["ddp"] and torch.cuda.Stream is saved["stream"]
    assert torch.cuda.set_device is saved["set_device"] and sampler.sync_random_seed() == "cuda"


def test_shims_do_nothing_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    before = torch.Tensor.cuda
    with cpu_shim.cpu_shim() as a, cpu_shim.partial_fc_cpu_shim() as b:
        assert not a and not b and torch.Tensor.cuda is before
    assert cpu_shim.install_cpu_shim() is False and torch.Tensor.cuda is before


def test_partial_fc_cpu_shim_only_touches_tensor_cuda():
    before, module_before = torch.Tensor.cuda, torch.nn.Module.cuda
    with cpu_shim.partial_fc_cpu_shim() as active:
        assert active == (not torch.cuda.is_available())
        if active:
            t = torch.zeros(1)
            assert t.cuda() is t and torch.nn.Module.cuda is module_before
    assert torch.Tensor.cuda is before



def _gloo_group():
    import torch.distributed as dist
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=60))
    return dist


@pytest.mark.upstream
def test_partial_fc_v2_runs_on_cpu_under_the_shim(ns):
    dist = _gloo_group()
    try:
        torch.manual_seed(0)
        # CosFace (exact: no arccos round trip) with s = 8, so that no target probability falls under
        # upstream's clamp at 1e-30 (a per-sample loss cap of 69.08)
        margin = ns.CombinedMarginLoss(8, 1.0, 0.0, 0.4)
        pfc = ns.PartialFC_V2(margin, 8, 6, 1.0, False)
        emb = torch.randn(5, 8, requires_grad=True)
        labels = torch.tensor([0, 2, 2, 5, 1])
        with cpu_shim.partial_fc_cpu_shim():
            loss = pfc(emb, labels.clone())
            loss.backward()
        # by hand: mean cross-entropy of 8 * (cos - 0.4 * onehot)
        emb2 = emb.detach().clone().requires_grad_()
        w2 = pfc.weight.detach().clone().requires_grad_()
        cos = torch.nn.functional.normalize(emb2) @ torch.nn.functional.normalize(w2).t()
        ref = torch.nn.functional.cross_entropy(8 * (cos - 0.4 * torch.nn.functional.one_hot(labels, 6)), labels)
        ref.backward()
        assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
        torch.testing.assert_close(emb.grad, emb2.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(pfc.weight.grad, w2.grad, rtol=1e-4, atol=1e-6)
        # sampled centres (sample_rate < 1) go through sample(), which calls .cuda() four times
        sampled = ns.PartialFC_V2(ns.CombinedMarginLoss(64, 1.0, 0.5, 0.0), 8, 6, 0.5, False)
        with cpu_shim.partial_fc_cpu_shim():
            loss = sampled(torch.randn(4, 8, requires_grad=True), torch.tensor([1, 1, 4, 4]))
            loss.backward()
        assert math.isfinite(loss.item()) and {1, 4} <= set(sampled.weight_index.tolist())
        assert len(sampled.weight_index) == 3  # int(0.5 * 6) centres, the positives among them
        assert torch.isfinite(sampled.weight.grad).all()
    finally:
        dist.destroy_process_group()

