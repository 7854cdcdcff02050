"""Small helpers shared by every layer (one home each): dtype promotion, mxnet import, atomic file writes,
a free TCP port, the CPU's name."""
import contextlib
import os
import socket
import tempfile
from pathlib import Path

import torch

__all__ = ["at_least_fp32", "keep_torch_threads", "import_mxnet", "cpu_model", "atomic_write", "free_port"]


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
    """``import mxnet`` without losing torch's thread count (see :func:`keep_torch_threads`).

    Raises:
        ImportError: mxnet is not installed, or it is installed but fails to load (e.g. mxnet 1.9.1 on
            numpy >= 1.24: an AttributeError at import; the original error is the ``__cause__``), so callers
            that fall back to the mxnet-free code catch one exception type.
    """
    with keep_torch_threads():
        try:
            import mxnet
        except ImportError:
            raise
        except Exception as e:  # an installed mxnet that cannot load: numpy aliases, missing shared libraries
            raise ImportError(f"mxnet is installed but fails to load ({type(e).__name__}: {e}); the pinned "
                              "profile with mxnet is requirements.txt (numpy 1.23.5)", name="mxnet") from e
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


def atomic_write(path, write, suffix: str = "", fsync: bool = False) -> Path:
    """Write ``path`` all or nothing: ``write(tmp)`` fills a temporary file beside it (same folder, so the
    rename is atomic; its name ends with ``suffix``, for writers such as ``np.savez`` that append one), which
    then replaces ``path``. A crash or an exception leaves ``path`` as it was and no temporary file behind.
    ``fsync=True`` flushes the data to disk before the rename (checkpoints: a power cut must not leave a
    renamed but empty file). Creates the folder. Returns ``path`` as a ``Path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (for a single-node rendezvous); the OS picks it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
