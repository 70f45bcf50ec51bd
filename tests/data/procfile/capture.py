"""Captures the sample logs in tests/data from real honcho and foreman runs.

Run with the project's Python: ``python tests/data/procfile/capture.py``.
It runs the Procfile beside this script (nats-server, two workers and
``scaler load``) under each manager twice: once with a pipe as stdout,
and once on a pseudo-terminal (through ``script``), so that the samples
carry the colour codes a terminal gets.  The samples are kept as
captured: nothing is stripped.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
DATA = HERE.parent
RUN_TIMEOUT_S = 60.0

COMMANDS = {
    "honcho": ["honcho", "start", "-c", "worker=2"],
    "foreman": ["foreman", "start", "-m", "nats=1,worker=2,load=1"],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def capture(command: list[str], tty: bool) -> bytes:
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "SAMPLE_NATS_PORT": str(port),
        "NATS_URL": f"nats://127.0.0.1:{port}",
    }
    env.pop("NATS_TOKEN", None)
    if tty:
        command = ["script", "-q", "-e", "-c", shlex.join(command), "/dev/null"]
    done = subprocess.run(
        command,
        cwd=HERE,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    return done.stdout


def main() -> None:
    for manager, command in COMMANDS.items():
        for tty in (False, True):
            name = f"{manager}-{'tty' if tty else 'piped'}.log"
            output = capture(command, tty)
            (DATA / name).write_bytes(output)
            print(f"{name}: {len(output)} bytes")


if __name__ == "__main__":
    main()
