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
from collections.abc import Callable, Iterator
from typing import Annotated

import typer
from rich.console import Console

from scaler import load, loop, payload, plot, report, server, sweep, worker
from scaler.combined import report_main
from scaler.errors import ExitCode, ScalerError
from scaler.handler import HandlerError, load_handler
from scaler.loop import LoopKind
from scaler.stats import RunResult
from scaler.supervisor import (
    DEFAULT_STRATEGIES,
    STRATEGY_NAMES,
    Strategy,
    Workload,
    exit_code,
    make_strategies,
    measure,
)
from scaler.workload import GRAMMAR, WorkSpec, WorkSpecError, parse_duration

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
DEFAULT_WORK = WorkSpec.parse("sleep:0-0.5")  # the seed demo's work
SWEEP_WORK = WorkSpec.parse("sleep:10ms")  # short enough for a grid of runs

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
            f"unknown strategy {unknown[0]!r}: choose from {', '.join(STRATEGY_NAMES)}",
            param_hint="'--strategy'",
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
        help=f"What one message costs: {GRAMMAR}. D is like 20ms or 0.5s, P like 5%.",
    ),
]
HandlerOption = Annotated[
    str | None,
    typer.Option(
        metavar="MODULE:FUNCTION",
        help="Run your own async def handler(msg) instead of --work.",
    ),
]
MessagesOption = Annotated[
    int,
    typer.Option(
        min=1, max=payload.MAX_MESSAGES, help="Messages published for each run."
    ),
]
SubjectOption = Annotated[str, typer.Option(help="Subject the workers subscribe to.")]
PublishOption = Annotated[
    str, typer.Option(help="Subject the workload is published to.")
]
QueueOption = Annotated[str, typer.Option(help="Queue group name prefix.")]
TimeoutOption = Annotated[
    float, typer.Option(min=0.1, help="Seconds one run may take.")
]
LoopOption = Annotated[
    LoopKind, typer.Option("--loop", help="Event loop of every process.")
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document and nothing else.")
]
RateOption = Annotated[
    float,
    typer.Option(
        min=0,
        help="Publish at this many messages a second; 0: all at once, as a burst.",
    ),
]
PlotOption = Annotated[
    str | None,
    typer.Option(
        "--plot", metavar="FILE", help="Draw the results to FILE (.png or .svg)."
    ),
]
VerboseOption = Annotated[
    int, typer.Option("--verbose", "-v", count=True, help="More logging on stderr.")
]


def _bad_handler(exc: HandlerError) -> typer.BadParameter:
    return typer.BadParameter(f"{exc.spec!r}: {exc.reason}", param_hint="'--handler'")


def _check_handler(spec: str | None) -> None:
    """Import the handler here, so a bad one fails before any process starts."""
    if spec is not None:
        try:
            load_handler(spec)
        except HandlerError as exc:
            raise _bad_handler(exc) from None


def _check_plot(path: str | None) -> None:
    if path is not None:
        try:
            plot.plot_format(path)
            plot.require_matplotlib()
        except (plot.PlotError, plot.PlotUnavailableError) as exc:
            raise typer.BadParameter(str(exc), param_hint="'--plot'") from None


def _measure(
    server_url: str | None,
    workload: Workload,
    strategies: list[Strategy],
    loop_kind: LoopKind,
) -> tuple[list[RunResult], ExitCode]:
    """Run the strategies with a progress bar on a terminal; exit on errors."""
    stderr = Console(stderr=True)
    bars = report.ProgressBar(stderr, runs=len(strategies))
    display = bars if stderr.is_terminal else None
    with _errors_to_exit():
        try:
            results, signum = loop.run(
                measure(server_url, workload, strategies, display), loop_kind
            )
        finally:
            if display is not None:
                display.close()
    return results, exit_code(results, signum)


def _draw(path: str | None, draw: Callable[[str], object]) -> None:
    """Draw the plot; a failure to write it is reported, not raised."""
    if path is None:
        return
    try:
        draw(path)
    except (OSError, plot.PlotError) as exc:
        typer.echo(f"scaler: cannot write {path}: {exc}", err=True)
    else:
        typer.echo(f"scaler: wrote {path}", err=True)


@app.command("run")
def run_command(
    procs: Annotated[int, typer.Option(min=1, help="Worker processes (N).")] = 4,
    limit: Annotated[
        int, typer.Option(min=1, help="Messages in flight per process (L).")
    ] = 25,
    messages: MessagesOption = 400,
    rate: RateOption = 0.0,
    work: WorkOption = DEFAULT_WORK,
    handler: HandlerOption = None,
    strategy: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Strategies to run, comma-separated: {', '.join(STRATEGY_NAMES)}. "
            f"Default: {','.join(DEFAULT_STRATEGIES)}."
        ),
    ] = None,
    server_url: ServerOption = None,
    subject: SubjectOption = "greet.*",
    publish_to: PublishOption = "greet.joe",
    queue: QueueOption = "scaler",
    timeout: TimeoutOption = 300.0,
    loop_kind: LoopOption = LoopKind.UVLOOP,
    json_output: JsonOption = False,
    plot_file: PlotOption = None,
    verbose: VerboseOption = 0,
) -> None:
    """Compare queue-group processes, in-subscription concurrency and both."""
    names = _parse_strategies(strategy)
    _check_handler(handler)
    _check_plot(plot_file)
    _setup_logging(verbose)
    workload = Workload(
        messages,
        work,
        subject,
        publish_to,
        queue,
        timeout,
        loop_kind.value,
        handler,
        rate,
    )
    strategies = make_strategies(names, procs, limit)
    results, code = _measure(server_url, workload, strategies, loop_kind)
    description = {**workload.describe(server_url), "procs": procs, "limit": limit}
    if json_output:
        doc = report.document(results, description, int(code))
        typer.echo(report.dumps(doc))
    else:
        report.print_report(report.stdout_console(), results, workload.work_text)
    spec = None if handler else work
    _draw(plot_file, lambda path: plot.plot_comparison(results, path, spec))
    raise typer.Exit(int(code))


def _parse_axis(text: str, option: str) -> list[int]:
    try:
        return sweep.parse_axis(text)
    except sweep.AxisError as exc:
        raise typer.BadParameter(str(exc), param_hint=f"'{option}'") from None


@app.command("sweep")
def sweep_command(
    procs: Annotated[
        str, typer.Option(help="Process counts: 1,2,4 or 1-4 or 1-16:x2.")
    ] = "1,2,4",
    limit: Annotated[
        str, typer.Option(help="Limits per process, in the same form.")
    ] = "1,10,50",
    messages: MessagesOption = 2000,
    rate: RateOption = 0.0,
    work: WorkOption = SWEEP_WORK,
    handler: HandlerOption = None,
    p99: Annotated[
        str | None,
        typer.Option(
            metavar="D", help="Recommend only cells whose p99 latency is within D."
        ),
    ] = None,
    server_url: ServerOption = None,
    subject: SubjectOption = "greet.*",
    publish_to: PublishOption = "greet.joe",
    queue: QueueOption = "scaler",
    timeout: TimeoutOption = 300.0,
    loop_kind: LoopOption = LoopKind.UVLOOP,
    json_output: JsonOption = False,
    plot_file: PlotOption = None,
    verbose: VerboseOption = 0,
) -> None:
    """Run every combination of procs and limit, and recommend one."""
    proc_counts = _parse_axis(procs, "--procs")
    limits = _parse_axis(limit, "--limit")
    max_p99_ms = None
    if p99 is not None:
        try:
            max_p99_ms = parse_duration(p99) * 1000
        except WorkSpecError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--p99'") from None
    _check_handler(handler)
    _check_plot(plot_file)
    _setup_logging(verbose)
    workload = Workload(
        messages,
        work,
        subject,
        publish_to,
        queue,
        timeout,
        loop_kind.value,
        handler,
        rate,
    )
    results, code = _measure(
        server_url, workload, sweep.grid(proc_counts, limits), loop_kind
    )
    recommendation = sweep.recommend(results, max_p99_ms)
    if json_output:
        description = {
            **workload.describe(server_url),
            "procs": proc_counts,
            "limits": limits,
            "max_p99_ms": max_p99_ms,
        }
        doc = sweep.document(results, description, recommendation, int(code))
        typer.echo(report.dumps(doc))
    else:
        console = report.stdout_console()
        console.print(sweep.table(results, recommendation))
        console.print(recommendation.reason, highlight=False)
    _draw(
        plot_file,
        lambda path: plot.plot_sweep(
            results, recommendation, path, None if handler else work, os.cpu_count()
        ),
    )
    raise typer.Exit(int(code))


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
    handler: HandlerOption = None,
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
    try:
        user_handler = load_handler(handler) if handler else None
    except HandlerError as exc:
        raise _bad_handler(exc) from None
    with _errors_to_exit():
        code = loop.run(worker.run(config, user_handler), loop_kind)
    raise typer.Exit(code)


@app.command("server")
def server_command(
    port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help=f"Client port; default the port of ${server.URL_ENV}, "
            f"else {server.DEFAULT_PORT}.",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    jetstream: Annotated[
        bool, typer.Option(help="Enable JetStream, stored in --store-dir.")
    ] = False,
    store_dir: Annotated[
        str | None, typer.Option(help="JetStream storage; default a temporary folder.")
    ] = None,
) -> None:
    """Run nats-server in the foreground: the nats process of a Procfile.

    The port comes from $NATS_URL when it is set, so that one variable
    points the server, the workers and the publisher at the same place.
    """
    with _errors_to_exit():
        port = port or server.port_from_env()
        server.exec_server(host, port, jetstream=jetstream, store_dir=store_dir)


@app.command("load")
def load_command(
    messages: MessagesOption = 400,
    rate: RateOption = 0.0,
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
        rate=rate,
    )
    with _errors_to_exit():
        code = loop.run(load.run(config))
    raise typer.Exit(code)


@app.command("report")
def report_command(
    files: Annotated[
        list[str] | None,
        typer.Argument(help="Combined output to read; default standard input."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Report on workers' records in a Procfile manager's combined output."""
    raise typer.Exit(report_main(files or [], json_output))


def main() -> None:
    app(prog_name="scaler")
