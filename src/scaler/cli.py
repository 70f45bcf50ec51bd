"""The ``scaler`` command line: argument handling only.

Each command checks its input, then hands over to the module that does
the work.  Errors that end a command print one line to stderr and exit
with the code documented in :class:`scaler.errors.ExitCode`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.console import Console

from scaler import load, loop, report, server, worker
from scaler.errors import ExitCode, ScalerError
from scaler.loop import LoopKind
from scaler.stats import RunResult
from scaler.supervisor import (
    DEFAULT_STRATEGIES,
    STRATEGY_NAMES,
    Strategy,
    Supervisor,
    Workload,
    make_strategies,
)
from scaler.workload import WorkSpec, WorkSpecError

log = logging.getLogger("scaler")

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
DEFAULT_WORK = WorkSpec.parse("sleep:0-0.5")  # the seed demo's work

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Measure how to scale a NATS consumer: processes in a queue group, "
    "concurrency inside one subscription, or both.",
)


def _setup_logging(verbose: int, default: int = logging.WARNING) -> None:
    level = default if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)


def _parse_work(value: str | WorkSpec) -> WorkSpec:
    if isinstance(value, WorkSpec):  # the default, passed through as it is
        return value
    try:
        return WorkSpec.parse(value)
    except WorkSpecError as exc:
        raise typer.BadParameter(str(exc)) from None


def _parse_strategies(values: list[str] | None) -> list[str]:
    if not values:
        return list(DEFAULT_STRATEGIES)
    names = [
        name.strip() for value in values for name in value.split(",") if name.strip()
    ]
    unknown = [name for name in names if name not in STRATEGY_NAMES]
    if unknown:
        raise typer.BadParameter(
            f"unknown strategy {unknown[0]!r}: choose from {', '.join(STRATEGY_NAMES)}"
        )
    return list(dict.fromkeys(names))


@contextlib.contextmanager
def _errors_to_exit() -> Iterator[None]:
    """Turn a ScalerError into its one-line message and exit code."""
    try:
        yield
    except ScalerError as exc:
        typer.echo(f"scaler: {exc}", err=True)
        raise typer.Exit(int(exc.code)) from None


ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar=server.URL_ENV,
        help="NATS server URL; by default an embedded nats-server on loopback. "
        f"A token may come from ${server.TOKEN_ENV}.",
    ),
]
WorkOption = Annotated[
    WorkSpec,
    typer.Option(
        parser=_parse_work,
        metavar="SPEC",
        help="What one message costs: none, sleep:D, sleep:A-B or cpu:D; "
        "D is like 20ms or 0.5s.",
    ),
]
LoopOption = Annotated[LoopKind, typer.Option(help="Event loop of the workers.")]
VerboseOption = Annotated[
    int, typer.Option("--verbose", "-v", count=True, help="More logging on stderr.")
]


@app.command("run")
def run_command(
    procs: Annotated[int, typer.Option(min=1, help="Worker processes (N).")] = 4,
    limit: Annotated[
        int, typer.Option(min=1, help="Messages in flight per process (L).")
    ] = 25,
    messages: Annotated[
        int, typer.Option(min=1, help="Messages published for each strategy.")
    ] = 400,
    work: WorkOption = DEFAULT_WORK,
    strategy: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Strategies to run, comma-separated: {', '.join(STRATEGY_NAMES)}. "
            f"Default: {','.join(DEFAULT_STRATEGIES)}."
        ),
    ] = None,
    server_url: ServerOption = None,
    subject: Annotated[
        str, typer.Option(help="Subject the workers subscribe to.")
    ] = "greet.*",
    publish_to: Annotated[
        str, typer.Option(help="Subject the workload is published to.")
    ] = "greet.joe",
    queue: Annotated[str, typer.Option(help="Queue group name prefix.")] = "scaler",
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds one strategy may take.")
    ] = 300.0,
    loop_kind: Annotated[
        LoopKind, typer.Option("--loop", help="Event loop of every process.")
    ] = LoopKind.UVLOOP,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON document and nothing else.")
    ] = False,
    verbose: VerboseOption = 0,
) -> None:
    """Compare queue-group processes, in-subscription concurrency and both."""
    names = _parse_strategies(strategy)
    _setup_logging(verbose)
    workload = Workload(
        messages=messages,
        work=work,
        subject=subject,
        publish_subject=publish_to,
        queue=queue,
        timeout_s=timeout,
        loop=loop_kind.value,
    )
    strategies = make_strategies(names, procs, limit)
    stderr = Console(stderr=True)
    display = report.ProgressBar(stderr) if stderr.is_terminal else None
    with _errors_to_exit():
        try:
            results, signum = loop.run(
                _supervise(server_url, workload, strategies, display), loop_kind
            )
        finally:
            if display is not None:
                display.close()
    code = _exit_code(results, signum)
    description = _describe(workload, server_url, procs, limit)
    if json_output:
        typer.echo(report.dumps(report.document(results, description, int(code))))
    else:
        report.print_report(report.stdout_console(), results, str(work))
    raise typer.Exit(int(code))


async def _supervise(
    server_url: str | None,
    workload: Workload,
    strategies: list[Strategy],
    display: report.ProgressBar | None,
) -> tuple[list[RunResult], int | None]:
    async with contextlib.AsyncExitStack() as stack:
        if server_url:
            url, token = server_url, os.environ.get(server.TOKEN_ENV)
            env = {server.URL_ENV: url}
        else:
            embedded = await stack.enter_async_context(server.embedded_server())
            url, token, env = embedded.url, embedded.token, embedded.env
        nc = await server.connect(url, token, name="scaler-run")
        stack.push_async_callback(server.close_quietly, nc)
        supervisor = Supervisor(nc, env, workload, display)
        supervisor.install_signal_handlers()
        results = await supervisor.run_all(strategies)
        return results, supervisor.signal
    raise AssertionError("unreachable")  # pragma: no cover


def _exit_code(results: list[RunResult], signum: int | None) -> ExitCode:
    if signum is not None:
        return ExitCode(128 + signum)
    if any(r.lost or r.dead_workers for r in results):
        return ExitCode.LOST
    return ExitCode.OK


def _describe(
    workload: Workload, server_url: str | None, procs: int, limit: int
) -> dict[str, Any]:
    return {
        "messages": workload.messages,
        "work": str(workload.work),
        "procs": procs,
        "limit": limit,
        "subject": workload.subject,
        "publish_subject": workload.publish_subject,
        "server": server.redact(server_url) if server_url else "embedded",
        "loop": workload.loop,
        "timeout_s": workload.timeout_s,
        "cpus": os.cpu_count(),
    }


def _default_worker_name() -> str:
    for variable in ("HONCHO_PROCESS_NAME", "PS"):
        if os.environ.get(variable):
            return os.environ[variable]
    return f"worker.{os.getpid()}"


@app.command("worker")
def worker_command(
    name: Annotated[
        str | None,
        typer.Option(
            help="Name in records and logs; default $HONCHO_PROCESS_NAME, $PS "
            "or worker.PID."
        ),
    ] = None,
    server_url: Annotated[
        str, typer.Option("--server", envvar=server.URL_ENV, help="NATS server URL.")
    ] = server.DEFAULT_URL,
    subject: Annotated[str, typer.Option(help="Subject to subscribe to.")] = "greet.*",
    queue: Annotated[str, typer.Option(help="Queue group to join.")] = "scaler",
    limit: Annotated[int, typer.Option(min=1, help="Messages in flight at most.")] = 25,
    work: WorkOption = DEFAULT_WORK,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run", help="Serve only this run's messages; default: the first seen."
        ),
    ] = None,
    loop_kind: Annotated[
        LoopKind, typer.Option("--loop", help="Event loop.")
    ] = LoopKind.UVLOOP,
    parent_pid: Annotated[int | None, typer.Option(hidden=True)] = None,
    verbose: VerboseOption = 0,
) -> None:
    """Run one worker: a queue-group subscription with bounded concurrency."""
    _setup_logging(verbose, default=logging.INFO)
    config = worker.WorkerConfig(
        name=name or _default_worker_name(),
        server=server_url,
        token=os.environ.get(server.TOKEN_ENV),
        subject=subject,
        queue=queue,
        limit=limit,
        work=work,
        run=run_id,
        parent_pid=parent_pid,
    )
    with _errors_to_exit():
        code = loop.run(worker.run(config), loop_kind)
    raise typer.Exit(code)


@app.command("server")
def server_command(
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="Client port on 127.0.0.1.")
    ] = server.DEFAULT_PORT,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    jetstream: Annotated[
        bool, typer.Option(help="Enable JetStream, stored in --store-dir.")
    ] = False,
    store_dir: Annotated[
        str | None, typer.Option(help="JetStream storage; default a temporary folder.")
    ] = None,
) -> None:
    """Run the embedded nats-server in the foreground, as a Procfile's nats process."""
    with _errors_to_exit():
        server.exec_server(host, port, jetstream=jetstream, store_dir=store_dir)


@app.command("load")
def load_command(
    messages: Annotated[int, typer.Option(min=1, help="Messages to publish.")] = 400,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Workers to wait for; default: all that show up until none "
            f"has joined for {load.SETTLE_S:g} s.",
        ),
    ] = None,
    server_url: Annotated[
        str, typer.Option("--server", envvar=server.URL_ENV, help="NATS server URL.")
    ] = server.DEFAULT_URL,
    publish_to: Annotated[
        str, typer.Option(help="Subject the workload is published to.")
    ] = "greet.joe",
    ready_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds to wait for the workers.")
    ] = 30.0,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds the run may take once published.")
    ] = 300.0,
    verbose: VerboseOption = 0,
) -> None:
    """Publish a workload to workers started elsewhere, and wait for them."""
    _setup_logging(verbose, default=logging.INFO)
    config = load.LoadConfig(
        server=server_url,
        token=os.environ.get(server.TOKEN_ENV),
        publish_subject=publish_to,
        messages=messages,
        workers=workers,
        ready_timeout_s=ready_timeout,
        timeout_s=timeout,
    )
    with _errors_to_exit():
        code = loop.run(load.run(config))
    raise typer.Exit(code)


def main() -> None:
    app(prog_name="scaler")
