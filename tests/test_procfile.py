"""The Procfile, run by real process managers, reported by ``scaler report``.

honcho comes with the test dependencies; foreman is a Debian package,
and its test is skipped where it is not installed.  Every run points the
Procfile's processes at a free port through ``NATS_URL``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import Spawner

REPO = Path(__file__).resolve().parent.parent
PROCFILE = REPO / "Procfile"
BIN = Path(sys.executable).parent
RUN_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def manager_env(tmp_path: Path) -> dict[str, str]:
    """Where the Procfile's `scaler` commands come from, and where NATS is."""
    return {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "HOME": str(tmp_path),
    }


def pipeline(
    spawn: Spawner, manager: str, tmp_path: Path
) -> tuple[int, dict[str, Any]]:
    """Run ``MANAGER | scaler report --json`` in bash; its exit code and the JSON."""
    report = shlex.join([sys.executable, "-m", "scaler", "report", "--json"])
    script = f"set -o pipefail; {manager} | {report}"
    child = spawn(["bash", "-c", script], env=manager_env(tmp_path), label=manager)
    finished = child.finish(RUN_TIMEOUT_S)
    return finished.returncode, finished.json()


def test_honcho_runs_the_procfile_and_every_message_is_reported(
    spawn: Spawner, tmp_path: Path
) -> None:
    honcho = shlex.join(
        [str(BIN / "honcho"), "start", "-f", str(PROCFILE), "-d", str(tmp_path)]
    )
    code, doc = pipeline(spawn, f"{honcho} -c worker=3", tmp_path)

    assert code == 0, doc
    (run,) = doc["runs"]
    assert run["published"] == 400
    assert run["processed"] == 400
    assert run["lost"] == 0
    assert run["procs"] == 3
    shares = [p["processed"] for p in run["processes"]]
    assert len(shares) == 3 and all(share > 0 for share in shares), shares
    assert sum(shares) == 400


@pytest.mark.skipif(shutil.which("foreman") is None, reason="foreman is not installed")
def test_foreman_runs_the_procfile_and_every_message_is_reported(
    spawn: Spawner, tmp_path: Path
) -> None:
    foreman = shlex.join(["foreman", "start", "-f", str(PROCFILE), "-d", str(tmp_path)])
    code, doc = pipeline(spawn, f"{foreman} -m all=1,worker=2", tmp_path)

    assert code == 0, doc
    (run,) = doc["runs"]
    assert run["processed"] == run["published"] == 400
    assert sorted(p["name"] for p in run["processes"]) == ["worker.1", "worker.2"]


def test_a_worker_killed_during_a_procfile_run_is_reported_with_its_loss(
    spawn: Spawner, tmp_path: Path
) -> None:
    # Slow enough that a worker always holds messages when it is killed.
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        "nats: scaler server\n"
        "worker: scaler worker --limit 2 --work sleep:50ms\n"
        "load: scaler load --workers 2 --messages 200\n"
    )
    honcho = spawn(
        [str(BIN / "honcho"), "start", "-f", str(procfile), "-c", "worker=2"],
        env=manager_env(tmp_path),
        label="honcho",
    )
    victim = int(honcho.stdout.expect(r"worker\.1 ready \(pid=(\d+)")[1])
    honcho.stdout.expect(r"load\.1\s+\| .*published 200 messages")
    os.kill(victim, signal.SIGKILL)
    finished = honcho.finish(RUN_TIMEOUT_S)
    log = tmp_path / "combined.log"
    log.write_text(finished.stdout)

    report = spawn.run_scaler("report", "--json", str(log))

    assert report.returncode == 1, report.stderr
    (run,) = report.json()["runs"]
    assert run["lost"] > 0
    assert run["processed"] + run["lost"] == run["published"] == 200
    assert run["dead_workers"] == ["worker.1"]
