"""Small helpers shared by the components."""
import contextlib

import torch

__all__ = ["at_least_fp32", "keep_torch_threads", "import_mxnet", "cpu_model"]


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32, or float64 if it already is: the maths never runs in fp16/bf16."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


@contextlib.contextmanager
def keep_torch_threads():
    """Restore torch's intra-op thread count on exit: importing mxnet 1.9 sets it to 1 (its OpenMP
    runtime), which halves CPU training and feature extraction on a 2-core machine."""
    n = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


def import_mxnet():
    """``import mxnet`` without losing torch's thread count (see :func:`keep_torch_threads`)."""
    with keep_torch_threads():
        import mxnet
    return mxnet


def cpu_model() -> str:
    """The CPU's model name, for benchmark reports (absolute speeds differ ~2x between CPUs of one kind)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()
