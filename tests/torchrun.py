"""Launching a test's processes under torchrun, on this machine, on a port nothing else holds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def free_port() -> int:
    """A local TCP port that was free a moment ago (the OS picks it, so parallel launches do not collide)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(
    target: Sequence[str],
    env: Mapping[str, str],
    timeout: float,
    nproc: int = 2,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node <nproc> ... <target>``, output captured.

    ``target`` is a script and its arguments, or ``-m module ...``; ``env`` is added to this process's
    environment.
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        *target,
    ]
    return subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
