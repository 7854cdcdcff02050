"""CUDA-only checks (each skips with the reason on a machine without a GPU); run by tools/gpu_check.py.

1. The QGFace head (quality partition, AdaFace margin softmax, enqueue + proxy correction, InfoNCE)
   fed fp16 embeddings made under ``torch.autocast`` gives the same losses and embedding gradients on
   CUDA as on the CPU, over several steps with the classifier being trained (queue and drift in play).
   Tolerances: loss |Δ| <= 1e-3 + 1e-4·|loss| (fp32 reductions in another order; the logits carry a
   scale of 64); gradients 1e-2 relative to their largest entry (they come back as fp16 on CUDA).
2. Inside an autocast region the contrastive term stays fp32 (DESIGN §4): the same L_con as in fp32.
3. ``DeviceBatches`` on CUDA (pinned batches, copy and normalisation on a side stream while the main
   stream is busy) yields the CPU's batches: labels exactly, images within 2.4e-7 (two float32 ulps at
   1.0: CUDA divides by a scalar as a multiplication by its reciprocal, the CPU divides).
4. No host sync in a QGFace step of the plugin's own code (forward + backward of ``QGFaceLoss``, gate
   and subset modes) under ``torch.cuda.set_sync_debug_mode("error")``; on failure the message lists
   every synchronising call (``"warn"`` mode, plus ``qgface_plugin.syncs.count_host_syncs`` when present).
5. ``optimizer_step`` under a fp16 GradScaler: an injected inf (loss, clipped or other gradient) skips
   the step (parameters unchanged), the scale backs off by the backoff factor, the next finite step
   updates; the step makes exactly one host sync (the all-reduced flag's read).
"""
import copy
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qgface_plugin import MarginClassifier, QGFaceLoss, build_margin
from qgface_plugin.arcface.device_data import DeviceBatches
from qgface_plugin.arcface.optim_step import optimizer_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device (torch.cuda.is_available() is False): CUDA-only checks")

C, D, B, K = 50, 64, 32, 256   # classes, embedding size, images per step (2B rows), queue entries
SYNC = "synchroniz"            # torch's "called a synchronizing CUDA operation"


def _head(hq_mode="gate", threshold=0.4):
    torch.manual_seed(0)
    kwargs = {}
    if "check_labels" in inspect.signature(QGFaceLoss).parameters:
        kwargs["check_labels"] = False  # the training loop checks its labels on the host (DeviceBatches)
    cls = MarginClassifier(build_margin("adaface"), D, C, hq_mode=hq_mode)
    return QGFaceLoss(cls, D, queue_size=K, threshold=threshold, stats_init="first_batch", **kwargs)


def _inputs(step, device):
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(2 * B, D, generator=g)
    scale = 1 + 0.5 * torch.rand(2 * B, 1, generator=g)   # a spread of norms: some rows LQ
    y = torch.randint(0, C, (B,), generator=g)
    return (x * scale).to(device), y.to(device)


def _fp16_embeddings(x, proj):
    """What a backbone under fp16 autocast hands the head: half embeddings."""
    with torch.autocast("cuda", dtype=torch.float16):
        z = F.linear(x, proj)
    assert z.dtype == torch.float16
    return z.detach()


def test_qgface_head_with_fp16_autocast_embeddings_matches_the_cpu():
    head_cpu = _head()
    head_gpu = copy.deepcopy(head_cpu).cuda()
    opt_cpu = torch.optim.SGD(head_cpu.parameters(), lr=0.5)
    opt_gpu = torch.optim.SGD(head_gpu.parameters(), lr=0.5)
    proj = torch.randn(D, D, generator=torch.Generator().manual_seed(7)).div(D ** 0.5).cuda()
    contrasted = 0.0
    for step in range(4):
        x, y = _inputs(step, "cuda")
        z16 = _fp16_embeddings(x, proj)
        z_gpu = z16.clone().requires_grad_()
        z_cpu = z16.float().cpu().requires_grad_()      # the same fp16 values, on the CPU in fp32
        loss_gpu, st_gpu = head_gpu(z_gpu, y)
        loss_cpu, st_cpu = head_cpu(z_cpu, y.cpu())
        loss_gpu.backward()
        loss_cpu.backward()
        for key in ("loss", "loss_cls", "loss_con"):
            a, b = float(st_gpu[key]), float(st_cpu[key])
            assert abs(a - b) <= 1e-3 + 1e-4 * abs(b), (step, key, a, b)
        for key in ("hq_fraction", "contrast_fraction"):
            assert float(st_gpu[key]) == float(st_cpu[key]), (step, key)
        contrasted += float(st_cpu["contrast_fraction"])
        g_gpu, g_cpu = z_gpu.grad.float().cpu(), z_cpu.grad
        assert torch.allclose(g_gpu, g_cpu, rtol=0, atol=1e-2 * float(g_cpu.abs().max())), step
        opt_gpu.step()
        opt_cpu.step()
        opt_gpu.zero_grad()
        opt_cpu.zero_grad()
    assert contrasted > 0, "no pair went to the contrastive branch: the check would not cover it"
    assert torch.allclose(head_gpu.queue.features.cpu(), head_cpu.queue.features, atol=1e-5)


def test_contrastive_term_stays_fp32_inside_autocast():
    head_fp32 = _head()
    head_amp = copy.deepcopy(head_fp32).cuda()
    head_fp32 = head_fp32.cuda()
    x, y = _inputs(0, "cuda")
    _, st_fp32 = head_fp32(x, y)
    with torch.autocast("cuda", dtype=torch.float16):
        _, st_amp = head_amp(x, y)
    a, b = float(st_amp["loss_con"]), float(st_fp32["loss_con"])
    assert abs(a - b) <= 1e-4 + 1e-4 * abs(b), (a, b)
    assert float(st_fp32["contrast_fraction"]) > 0


class _Busy:
    """Keeps the main stream busy so the side-stream prefetch overlaps real work."""

    def __init__(self):
        self.a = torch.randn(2048, 2048, device="cuda")

    def __call__(self):
        for _ in range(4):
            self.a = (self.a @ self.a).tanh_()


def test_device_batches_on_cuda_yield_the_cpu_batches():
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (24, 2, 3, 112, 112), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (24,), generator=g)
    dataset = torch.utils.data.TensorDataset(images, labels)
    make = lambda pin: torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=False, pin_memory=pin)  # noqa: E731
    want = list(DeviceBatches(make(False), torch.device("cpu"), 10))
    busy = _Busy()
    got = []
    for im, y in DeviceBatches(make(True), torch.device("cuda", torch.cuda.current_device()), 10):
        assert im.is_cuda and y.is_cuda and im.dtype == torch.float32
        busy()
        got.append((im.clone(), y.clone()))   # used on the main stream after the busy work
    torch.cuda.synchronize()
    assert len(got) == len(want) == 6
    for (im, y), (im_c, y_c) in zip(got, want):
        assert torch.equal(y.cpu(), y_c)
        diff = float((im.cpu() - im_c).abs().max())
        assert diff <= 2.4e-7, diff


def _sync_sites(fn) -> str:
    """Every synchronising call of ``fn()`` (warn mode; plus count_host_syncs' attribution if present)."""
    import warnings
    try:
        from qgface_plugin.syncs import count_host_syncs
    except ImportError:
        count_host_syncs = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            if count_host_syncs is not None:
                with count_host_syncs() as log:
                    fn()
            else:
                log = None
                fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    lines = [f"  cuda sync at {w.filename}:{w.lineno}" for w in caught if SYNC in str(w.message)]
    if log is not None:
        lines += [f"  op: {r}" for r in log]
    return "\n".join(lines) or "  (none seen in warn mode)"


@pytest.mark.parametrize("hq_mode", ["gate", "subset"])
def test_qgface_step_makes_no_host_sync(hq_mode):
    head = _head(hq_mode).cuda()
    proj = torch.randn(D, D, device="cuda") / D ** 0.5

    inputs = [_inputs(i, "cuda") for i in range(3)]   # host-to-device copies made before the check
    inputs = [(_fp16_embeddings(x, proj), y) for x, y in inputs]

    def step(i):
        z, y = inputs[i]
        loss, _ = head(z.clone().requires_grad_(), y)
        loss.backward()

    step(0)                                   # first step: first_batch statistics, lazy inits
    torch.cuda.synchronize()
    failure = None
    torch.cuda.set_sync_debug_mode("error")
    try:
        step(1)
    except RuntimeError as exc:
        if SYNC not in str(exc):
            raise
        failure = exc
    finally:
        torch.cuda.set_sync_debug_mode("default")
    if failure is not None:
        pytest.fail(f"the QGFace step ({hq_mode}) synchronises with the host: {failure}\n"
                    f"all synchronising calls of one step:\n{_sync_sites(lambda: step(2))}")


def _scaled_setup(inject):
    torch.manual_seed(0)
    backbone = nn.Linear(16, 8).cuda()
    shard = nn.Parameter(torch.randn(5, 8, device="cuda"))
    opt = torch.optim.SGD([{"params": backbone.parameters()}, {"params": [shard]}], lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 10, growth_interval=1000)
    x = torch.randn(32, 16, device="cuda")
    y = torch.randint(0, 5, (32,), device="cuda")

    def loss_fn(bad):
        with torch.autocast("cuda", dtype=torch.float16):
            logits = backbone(x) @ shard.t()
        loss = F.cross_entropy(logits.float(), y)
        hooks = []
        if bad and inject == "loss":
            loss = loss * float("inf")
        elif bad and inject == "clipped":
            hooks.append(backbone.weight.register_hook(lambda g: g + float("inf")))
        elif bad and inject == "other":
            hooks.append(shard.register_hook(lambda g: g + float("nan")))
        return loss, hooks

    return backbone, shard, opt, scaler, loss_fn


@pytest.mark.parametrize("inject", ["loss", "clipped", "other"])
def test_fp16_step_with_an_inf_skips_and_backs_off(inject):
    backbone, shard, opt, scaler, loss_fn = _scaled_setup(inject)
    loss, _ = loss_fn(False)
    assert optimizer_step(loss, opt, scaler, backbone.parameters(), 5.0, [shard]) is False
    assert scaler.get_scale() == 2.0 ** 10
    before = [p.detach().clone() for p in (*backbone.parameters(), shard)]
    loss, hooks = loss_fn(True)
    skipped = optimizer_step(loss, opt, scaler, backbone.parameters(), 5.0, [shard])
    for h in hooks:
        h.remove()
    assert skipped is True
    assert scaler.get_scale() == 2.0 ** 10 * scaler.get_backoff_factor()
    for p, b in zip((*backbone.parameters(), shard), before):
        assert torch.equal(p.detach(), b), "a skipped step changed a parameter"
        assert p.grad is None
    loss, _ = loss_fn(False)
    assert optimizer_step(loss, opt, scaler, backbone.parameters(), 5.0, [shard]) is False
    assert not torch.equal(backbone.weight.detach(), before[0])
    assert all(torch.isfinite(p).all() for p in (*backbone.parameters(), shard))


def test_fp16_optimizer_step_makes_exactly_one_host_sync():
    import warnings
    backbone, shard, opt, scaler, loss_fn = _scaled_setup("loss")
    loss, _ = loss_fn(False)
    optimizer_step(loss, opt, scaler, backbone.parameters(), 5.0, [shard])   # lazy state, momentum buffers
    loss, _ = loss_fn(False)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            optimizer_step(loss, opt, scaler, backbone.parameters(), 5.0, [shard])
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sites = [f"{w.filename}:{w.lineno}" for w in caught if SYNC in str(w.message)]
    assert len(sites) == 1, sites
