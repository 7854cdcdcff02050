"""Process helpers shared by the tests: a free TCP port and a subprocess run that cannot hang."""
import os
import signal
import socket
import subprocess

import pytest


def free_port() -> int:
    """A TCP port that was free a moment ago (bound to port 0 and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_guarded(cmd, timeout, **popen_kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own session (stderr merged into stdout); on timeout the whole group
    (torchrun and its workers included) is killed and the test fails with the output's tail."""
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **popen_kwargs)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(map(str, cmd))} ran past {timeout} s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")
