"""The `switchyard` command line."""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = ["app"]

app = typer.Typer(help="Switchyard: serve a distilled model on Triton behind a teacher cache.")
models_app = typer.Typer(help="Build, evaluate and export the teacher and student models.")
app.add_typer(models_app, name="models")
triton_app = typer.Typer(help="Serve the model repository with NVIDIA Triton Inference Server.")
app.add_typer(triton_app, name="triton")
batch_app = typer.Typer(help="The offline batch job: teacher predictions into the Redis cache.")
app.add_typer(batch_app, name="batch")
router_app = typer.Typer(help="The gRPC router: cache route (Redis) or model route (Triton).")
app.add_typer(router_app, name="router")
prompts_app = typer.Typer(help="Zero-, one- and few-shot prompting of a packaged LLM.")
app.add_typer(prompts_app, name="prompts")


def _fail(message: str) -> typer.Exit:
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=2)


def _settings_error(what: str, exc: "ValidationError") -> typer.Exit:
    """One line per problem, naming the setting but never echoing its value (a password)."""
    problems = [
        ": ".join(filter(None, [".".join(str(part) for part in error["loc"]), error["msg"]]))
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    return _fail(f"{what}: {'; '.join(problems)}")


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def report_tables(report: dict[str, Any]) -> list[Table]:
    """The evaluation table (one row per model) and the checks table (one row per task)."""
    models = Table(title=f"Switchyard models, {report['profile']} profile (test split)")
    for column in ("task", "model", "params", "size", "accuracy", "macro F1", "agrees", "b1 ms"):
        models.add_column(column, justify="left" if column in {"task", "model"} else "right")
    checks = Table(title="Export and responsible-use checks")
    for column in ("task", "trainable", "onnx |Δlogit|", "int8=fp32", "served", "bias gap s/t"):
        checks.add_column(column, justify="left" if column == "task" else "right")
    for task, result in report["tasks"].items():
        teacher, student, onnx = result["teacher"], result["student"], result["onnx"]
        rows = [
            (
                f"teacher {teacher['base_model']}+LoRA",
                f"{teacher['params'] / 1e6:.1f}M",
                "",
                teacher["test_accuracy"],
                teacher["test_macro_f1"],
                "",
                teacher["latency_ms_batch1"],
            ),
            (
                "student L3 torch",
                f"{student['params'] / 1e6:.1f}M",
                "",
                student["test_accuracy"],
                student["test_macro_f1"],
                _percent(student["agreement_with_teacher"]),
                student["latency_ms_batch1"],
            ),
            (
                "student ONNX fp32",
                "",
                f"{onnx['size_bytes_fp32'] / 2**20:.1f} MiB",
                onnx["fp32_test_accuracy"],
                None,
                "",
                onnx["fp32_latency_ms_batch1"],
            ),
            (
                "student ONNX int8",
                "",
                f"{onnx['size_bytes_int8'] / 2**20:.1f} MiB",
                onnx["int8_test_accuracy"],
                onnx["int8_test_macro_f1"],
                "",
                onnx["int8_latency_ms_batch1"],
            ),
        ]
        for index, (name, params, size, accuracy, f1, agrees, latency) in enumerate(rows):
            models.add_row(
                task if index == 0 else "",
                name,
                params,
                size,
                _percent(accuracy),
                "" if f1 is None else _percent(f1),
                agrees,
                f"{latency:.2f}",
                end_section=index == len(rows) - 1,
            )
        bias = result["bias"]
        checks.add_row(
            task,
            _percent(teacher["trainable_fraction"]),
            f"{onnx['max_abs_logit_diff']:.1e}",
            _percent(onnx["int8_agreement_with_fp32"]),
            result["served_precision"],
            "n/a"
            if bias is None
            else f"{_percent(bias['max_gap'])} / {_percent(bias['teacher_max_gap'])}",
        )
    return [models, checks]


def _print_report(report: dict[str, Any]) -> None:
    console = Console()
    if not console.is_terminal:
        console = Console(width=110)
    for table in report_tables(report):
        console.print(table)


@models_app.command("build")
def models_build(
    out: Annotated[Path, typer.Option(help="Output folder for the build and model repository.")],
    profile: Annotated[str, typer.Option(help="Build profile: quick or full.")] = "quick",
    tasks: Annotated[str, typer.Option(help="Comma-separated tasks.")] = "topic,sentiment",
    seed: Annotated[int, typer.Option(help="Seed for splits, sampling and training.")] = 13,
    precision: Annotated[
        str, typer.Option(help="Served precision: auto (int8 if it keeps accuracy), int8, fp32.")
    ] = "auto",
    max_train: Annotated[int | None, typer.Option(help="Override: training examples.")] = None,
    max_eval: Annotated[int | None, typer.Option(help="Override: validation/test cap.")] = None,
    teacher_steps: Annotated[int | None, typer.Option(help="Override: teacher steps.")] = None,
    student_steps: Annotated[int | None, typer.Option(help="Override: student steps.")] = None,
) -> None:
    """Build teacher and student for each task and publish OUT/model_repository."""
    from services.pipeline.errors import PipelineError
    from services.pipeline.profiles import get_profile

    try:
        if precision not in {"auto", "int8", "fp32"}:
            raise PipelineError(f"unknown precision {precision!r}; use auto, int8 or fp32")
        chosen = get_profile(profile).with_overrides(
            max_train=max_train,
            max_eval=max_eval,
            teacher_steps=teacher_steps,
            student_steps=student_steps,
        )
        task_list = [task.strip() for task in tasks.split(",") if task.strip()]
        if not task_list:
            raise PipelineError("no task given; use --tasks topic,sentiment")
        # Torch and the training stack load only here, so serving commands stay light.
        from services.pipeline.build import BuildOptions, build_models

        report = build_models(BuildOptions(out, chosen, task_list, seed, precision))  # type: ignore[arg-type]
    except PipelineError as exc:
        raise _fail(str(exc)) from None
    _print_report(report)
    Console().print(f"report: {out / 'report.json'}   model repository: {out / 'model_repository'}")


@models_app.command("report")
def models_report(
    out: Annotated[Path, typer.Option(help="Build folder holding report.json.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON.")] = False,
) -> None:
    """Print the evaluation table of an earlier build."""
    path = out / "report.json"
    if not path.is_file():
        raise _fail(f"no report at {path}; run `switchyard models build --out {out}` first")
    report = json.loads(path.read_text(encoding="utf-8"))
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)


@triton_app.command("serve")
def triton_serve(
    repository: Annotated[Path, typer.Option(help="Model repository (OUT/model_repository).")],
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port [8001].")] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP port [8000].")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Prometheus metrics port [8002].")
    ] = None,
    cache_size: Annotated[int | None, typer.Option(help="Response cache bytes; 0 = off.")] = None,
    threads: Annotated[
        int | None, typer.Option(help="onnxruntime threads per model instance [from config].")
    ] = None,
    ready_timeout: Annotated[float | None, typer.Option(help="Seconds to wait for ready.")] = None,
) -> None:
    """Run Triton until SIGTERM or SIGINT, picking up new model versions as they appear."""
    import signal
    import threading

    from services.triton.server import TritonError, TritonServer, TritonSettings

    overrides: dict[str, Any] = {
        "host": host,
        "grpc_port": grpc_port,
        "http_port": http_port,
        "metrics_port": metrics_port,
        "cache_size": cache_size,
        "onnx_threads": threads,
        "ready_timeout": ready_timeout,
    }
    settings = TritonSettings(
        repository=repository,
        **{key: value for key, value in overrides.items() if value is not None},
    )
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    console = Console(soft_wrap=True)
    server = TritonServer(settings)
    try:
        report = server.start()
        for model, reason in report.rejected.items():
            console.print(f"not serving {model}: {reason}", highlight=False)
        console.print(
            f"triton ready (pid {server.pid}): grpc {settings.host}:{settings.grpc_port}, "
            f"http {settings.host}:{settings.http_port}, "
            f"metrics http://{settings.host}:{settings.metrics_port}/metrics; "
            f"serving {', '.join(report.added)}",
            highlight=False,
        )
        while not stopping.wait(settings.poll_seconds):
            server.check_alive()
            report = server.runtime.sync()
            for added in report.added:
                console.print(f"new model version {added}", highlight=False)
            for model, reason in report.rejected.items():
                console.print(f"not serving {model}: {reason}", highlight=False)
    except TritonError as exc:
        raise _fail(str(exc)) from None
    finally:
        server.stop()
    console.print("triton stopped")


def _seconds(value: str) -> int:
    """'3600', '90m', '12h' or '8d' as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (value[:-1], value[-1]) if value[-1:] in units else (value, "s")
    if not number.isdigit() or int(number) == 0:
        raise typer.BadParameter(f"{value!r} is not a duration such as 3600, 90m, 12h or 8d")
    return int(number) * units[unit]


@batch_app.command("run")
def batch_run(
    task: Annotated[str, typer.Option(help="Task whose teacher labels the texts.")],
    inputs: Annotated[
        list[Path] | None,
        typer.Option("--input", help="JSONL, CSV or text file of texts (repeatable)."),
    ] = None,
    include_misses: Annotated[
        bool, typer.Option(help="Also label the texts the router queued as misses.")
    ] = False,
    shard: Annotated[
        str, typer.Option(help="This worker's share i/n of the input (Kubernetes Indexed Job).")
    ] = "0/1",
    ttl: Annotated[
        str | None, typer.Option(help="Lifetime of the generation's keys: 3600, 90m, 12h, 8d.")
    ] = None,
    build: Annotated[
        Path | None, typer.Option(help="Build folder of `switchyard models build` [build].")
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="Redis URL; prefer SWITCHYARD_BATCH_REDIS_URL.")
    ] = None,
    namespace: Annotated[str, typer.Option(help="Cache namespace [the task].")] = "",
    input_format: Annotated[
        str | None, typer.Option("--format", help="jsonl, csv or text [from the suffix].")
    ] = None,
    text_field: Annotated[str, typer.Option(help="JSONL field or CSV column.")] = "text",
    batch_size: Annotated[int | None, typer.Option(help="Texts per teacher pass [32].")] = None,
    write_every: Annotated[
        int | None, typer.Option(help="Texts labelled between writes [512].")
    ] = None,
    metrics_file: Annotated[
        Path | None, typer.Option(help="Write run metrics here (Prometheus textfile format).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    teacher: Annotated[
        str, typer.Option(help="model (the build's fine-tuned teacher) or llm-fewshot.")
    ] = "model",
    shots: Annotated[int, typer.Option(help="Examples per prompt (llm-fewshot).")] = 3,
    selection: Annotated[
        str, typer.Option(help="How examples are chosen: nearest or random (llm-fewshot).")
    ] = "nearest",
    seed: Annotated[int, typer.Option(help="Seed of the example draw (llm-fewshot).")] = 0,
) -> None:
    """Label texts with the task's teacher into a new cache generation, then flip to it."""
    import time

    from pydantic import ValidationError

    from services.batch.errors import BatchError
    from services.batch.inputs import FORMATS

    formats = set(FORMATS.values())
    if input_format is not None and input_format not in formats:
        raise _fail(f"unknown format {input_format!r}; use {', '.join(sorted(formats))}")
    overrides: dict[str, Any] = {
        "redis_url": redis_url,
        "build_dir": build,
        "ttl_seconds": None if ttl is None else _seconds(ttl),
        "batch_size": batch_size,
        "write_every": write_every,
    }
    try:
        # Torch and the teacher load only here, so the other commands stay light.
        from services.batch.job import BatchOptions, BatchSettings, Shard, run_batch
        from services.batch.metrics import write_metrics

        settings = BatchSettings(**{k: v for k, v in overrides.items() if v is not None})
        options = BatchOptions(
            task=task,
            inputs=inputs or [],
            include_misses=include_misses,
            shard=Shard.parse(shard),
            namespace=namespace,
            input_format=input_format,
            text_field=text_field,
            show_progress=progress,
            teacher=teacher,
            shots=shots,
            selection=selection,
            seed=seed,
        )
        summary = run_batch(options, settings)
    except BatchError as exc:
        raise _fail(str(exc)) from None
    except ValidationError as exc:
        raise _settings_error("batch settings", exc) from None
    if metrics_file is not None:
        write_metrics(metrics_file, summary, time.time())
    table = Table(title=f"batch run: {task} -> {summary.namespace}, shard {shard}")
    table.add_column("")
    table.add_column("", justify="right")
    rows = {
        "rows read (files and misses)": summary.rows_read,
        "of them misses": summary.misses_read,
        "skipped": sum(summary.skipped.values()),
        "duplicates": summary.duplicates,
        "unique texts": summary.unique,
        "in this shard": summary.in_shard,
        "already written (resumed)": summary.resumed,
        "written": summary.written,
        "teacher rows/s": f"{summary.rows_per_second:.1f}",
        "generation": summary.generation or "-",
        "rows in generation": summary.generation_rows,
        "misses removed": summary.misses_removed,
        "seconds": f"{summary.seconds:.1f}",
    }
    for reason, count in summary.skipped.items():
        rows[f"  skipped: {reason}"] = count
    for name, value in rows.items():
        table.add_row(name, str(value))
    console = Console(width=100)
    console.print(table)
    console.print(f"outcome: {summary.outcome}", highlight=False)


@router_app.command("serve")
def router_serve(
    config: Annotated[Path, typer.Option(help="Router settings (YAML).")] = Path(
        "router/config.yaml"
    ),
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port [from config].")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Metrics port [from config].")] = None,
) -> None:
    """Serve the router until SIGTERM or SIGINT."""
    import asyncio
    import logging

    from pydantic import ValidationError

    from router.server import serve
    from router.settings import load_settings

    logging.basicConfig(
        level=logging.INFO,
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
    )
    overrides = {"grpc_port": grpc_port, "metrics_port": metrics_port}
    try:
        settings = load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
        asyncio.run(serve(settings))
    except ValidationError as exc:
        raise _settings_error("router settings", exc) from None
    except (OSError, ValueError) as exc:
        raise _fail(f"router: {exc}".replace("\n", "; ")) from None


@router_app.command("check")
def router_check(
    address: Annotated[str, typer.Option(help="Router address.")] = "127.0.0.1:50051",
    service: Annotated[str, typer.Option(help="Health service name; empty for overall.")] = "",
    timeout: Annotated[float, typer.Option(help="Deadline in seconds.")] = 2.0,
    tls_ca_file: Annotated[
        Path | None,
        typer.Option(
            envvar="SWITCHYARD_CHECK_TLS_CA_FILE",
            help="Connect with TLS, trusting this CA (the system's CAs when only other TLS "
            "options are given).",
        ),
    ] = None,
    tls_cert_file: Annotated[
        Path | None,
        typer.Option(
            envvar="SWITCHYARD_CHECK_TLS_CERT_FILE",
            help="Client certificate, for a router that requires one (mutual TLS).",
        ),
    ] = None,
    tls_key_file: Annotated[
        Path | None,
        typer.Option(envvar="SWITCHYARD_CHECK_TLS_KEY_FILE", help="Key of --tls-cert-file."),
    ] = None,
    tls_server_name: Annotated[
        str | None,
        typer.Option(
            envvar="SWITCHYARD_CHECK_TLS_SERVER_NAME",
            help="Name the router's certificate must hold, when the address is not in it "
            "(e.g. 127.0.0.1 inside the router's container).",
        ),
    ] = None,
) -> None:
    """Exit 0 when the router's gRPC health check says SERVING (for container health checks)."""
    from services.stack.health import router_serving

    credentials = None
    if tls_ca_file or tls_cert_file or tls_key_file or tls_server_name:
        # Only here: a plaintext probe keeps to the lighter imports.
        from router.tls import channel_credentials

        try:
            credentials = channel_credentials(tls_ca_file, tls_cert_file, tls_key_file)
        except (OSError, ValueError) as exc:
            raise _fail(f"router check: {exc}") from None
    status = router_serving(address, service, timeout, credentials, tls_server_name)
    if status != "SERVING":
        raise _fail(f"router at {address}: {status}")
    print("SERVING")


def _stack_settings(overrides: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    from services.stack.stack import StackSettings

    try:
        return StackSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise _fail(f"stack settings: {exc}".replace("\n", "; ")) from None


@app.command("up")
def stack_up(
    build: Annotated[Path | None, typer.Option(help="Build folder [build].")] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Pids, logs and configs [.switchyard].")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on [127.0.0.1].")] = None,
    router_port: Annotated[int | None, typer.Option(help="Router gRPC [50051].")] = None,
    router_metrics_port: Annotated[int | None, typer.Option(help="Router metrics [9464].")] = None,
    triton_http_port: Annotated[int | None, typer.Option(help="Triton HTTP [8000].")] = None,
    triton_grpc_port: Annotated[int | None, typer.Option(help="Triton gRPC [8001].")] = None,
    triton_metrics_port: Annotated[int | None, typer.Option(help="Triton metrics [8002].")] = None,
    redis_port: Annotated[int | None, typer.Option(help="Redis [6379].")] = None,
    prometheus_port: Annotated[int | None, typer.Option(help="Prometheus [9090].")] = None,
) -> None:
    """Start Redis, Triton, the router, a first batch run and Prometheus (if installed)."""
    from services.stack.errors import StackError
    from services.stack.stack import up

    settings = _stack_settings(
        {
            "build_dir": build,
            "state_dir": state_dir,
            "host": host,
            "router_port": router_port,
            "router_metrics_port": router_metrics_port,
            "triton_http_port": triton_http_port,
            "triton_grpc_port": triton_grpc_port,
            "triton_metrics_port": triton_metrics_port,
            "redis_port": redis_port,
            "prometheus_port": prometheus_port,
        }
    )
    console = Console(soft_wrap=True)
    try:
        processes = up(settings, lambda line: console.print(line, highlight=False))
    except StackError as exc:
        raise _fail(str(exc)) from None
    table = Table(title="Switchyard is up")
    for column in ("service", "address", "pid", "log"):
        table.add_column(column)
    for process in processes:
        table.add_row(process.name, process.address, str(process.pid), process.log)
    console.print(table)
    console.print(
        f"metrics: router http://{settings.host}:{settings.router_metrics_port}/metrics, "
        f"triton http://{settings.host}:{settings.triton_metrics_port}/metrics. "
        "Try `switchyard demo`; stop with `switchyard down`.",
        highlight=False,
    )


@app.command("down")
def stack_down(
    state_dir: Annotated[
        Path | None, typer.Option(help="State folder of `up` [.switchyard].")
    ] = None,
) -> None:
    """Stop everything `switchyard up` started."""
    from services.stack.errors import StackError
    from services.stack.stack import down

    console = Console(soft_wrap=True)
    try:
        stopped = down(
            _stack_settings({"state_dir": state_dir}),
            lambda line: console.print(line, highlight=False),
        )
    except StackError as exc:
        raise _fail(str(exc)) from None
    console.print("switchyard is down" if stopped else "nothing was running")


@app.command("demo")
def stack_demo(
    address: Annotated[str | None, typer.Option(help="Router address [from `up`].")] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="State folder of `up` [.switchyard].")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Deadline per request in seconds.")] = 5.0,
) -> None:
    """Send a few requests of each route to the router and print answers, routes and latencies."""
    import grpc

    from services.stack.demo import run_demo
    from services.stack.errors import StackError
    from services.stack.processes import StateFile

    settings = _stack_settings({"state_dir": state_dir})
    if address is None:
        try:
            recorded = StateFile(settings.state_dir).load()
        except StackError as exc:
            raise _fail(str(exc)) from None
        routers = [p for p in recorded if p.name == "router"]
        if not routers or not routers[0].alive():
            raise _fail("no running stack found; run `switchyard up` first, or pass --address")
        address = routers[0].address
    try:
        answers = run_demo(address, settings.queries_dir, timeout)
    except grpc.RpcError as exc:
        raise _fail(f"router at {address}: {exc.code().name}: {exc.details()}") from None
    table = Table(title=f"switchyard demo ({address})")
    for column in ("task", "text", "label", "score", "route", "server ms", "client ms"):
        table.add_column(column, justify="right" if "ms" in column or column == "score" else "left")
    for answer in answers:
        table.add_row(
            answer.task,
            answer.text if len(answer.text) <= 44 else answer.text[:41] + "...",
            answer.label,
            f"{answer.score:.3f}",
            answer.route,
            f"{answer.server_ms:.2f}",
            f"{answer.client_ms:.2f}",
        )
    Console(width=120).print(table)


@app.command("bench")
def bench(
    quick: Annotated[bool, typer.Option(help="Short phases (under 2 minutes in all).")] = False,
    out: Annotated[Path, typer.Option(help="Results folder.")] = Path("bench-results"),
    state_dir: Annotated[
        Path | None, typer.Option(help="State folder of `up` [.switchyard].")
    ] = None,
    build: Annotated[Path | None, typer.Option(help="Build folder [build].")] = None,
    report: Annotated[
        Path | None, typer.Option(help="Also write the tables here (BENCHMARKS.md).")
    ] = None,
) -> None:
    """Measure every route of the running stack against its floor and its alternatives."""
    from bench.stack_bench import BenchOptions, run_bench
    from services.stack.errors import StackError

    settings = _stack_settings({"state_dir": state_dir, "build_dir": build})
    options = BenchOptions(
        state_dir=settings.state_dir,
        build_dir=settings.build_dir,
        queries_dir=settings.queries_dir,
        out_dir=out,
        quick=quick,
        report=report,
    )
    console = Console(soft_wrap=True)
    try:
        run_bench(options, lambda line: console.print(line, highlight=False))
    except (RuntimeError, StackError) as exc:
        raise _fail(str(exc)) from None
    console.print((out / "results.md").read_text(encoding="utf-8"), highlight=False, markup=False)
    console.print(f"results: {out / 'results.json'}, charts in {out}")


@app.command("reliability")
def reliability(
    build: Annotated[Path, typer.Option(help="Build folder with the model repository.")] = Path(
        "build"
    ),
    out: Annotated[Path, typer.Option(help="Results folder.")] = Path("reliability-results"),
    soak_seconds: Annotated[
        float, typer.Option(help="Also soak at 80% of capacity this long; 0 skips the soak.")
    ] = 0.0,
    scenario: Annotated[
        list[str] | None, typer.Option(help="Run only these scenarios (repeatable).")
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Also write the report here (RELIABILITY.md).")
    ] = None,
) -> None:
    """Break Redis, Triton and the router under load, send bad input, soak; report each."""
    from services.reliability.run import ReliabilityOptions, run_reliability

    options = ReliabilityOptions(build, out, soak_seconds, tuple(scenario or ()), report)
    console = Console(soft_wrap=True)
    try:
        results = run_reliability(options, lambda line: console.print(line, highlight=False))
    except RuntimeError as exc:
        raise _fail(str(exc)) from None
    console.print((out / "results.md").read_text(encoding="utf-8"), highlight=False, markup=False)
    if not all(result.passed for result in results):
        raise typer.Exit(1)


@prompts_app.command("eval")
def prompts_eval(
    task: Annotated[str, typer.Option(help="Task whose test split is sampled.")],
    shots: Annotated[str, typer.Option(help="Shot counts, comma separated.")] = "0,1,3,5",
    n: Annotated[int, typer.Option(help="Test texts in the sample.")] = 40,
    seed: Annotated[int, typer.Option(help="Seed of the sample and of the example draws.")] = 0,
    selection: Annotated[str, typer.Option(help="random or nearest (by embedding).")] = "random",
    prompt_format: Annotated[
        str, typer.Option("--format", help="plain (input: label lines) or chat.")
    ] = "plain",
    max_chars: Annotated[
        int | None, typer.Option(help="Clip each text to this many characters [300].")
    ] = None,
    build: Annotated[Path, typer.Option(help="Build folder with the student.")] = Path("build"),
    out: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
) -> None:
    """Accuracy and macro-F1 of the prompted LLM per shot count, beside the student."""
    import json

    from pydantic import ValidationError

    from services.prompts.errors import PromptError
    from services.prompts.evaluate import PromptEvalOptions, PromptSettings, evaluate_prompts

    if selection not in ("random", "nearest"):
        raise _fail(f"unknown selection {selection!r}; use random or nearest")
    if prompt_format not in ("plain", "chat"):
        raise _fail(f"unknown format {prompt_format!r}; use plain or chat")
    try:
        counts = [int(count) for count in shots.split(",")]
    except ValueError:
        raise _fail(f"--shots must be counts separated by commas, got {shots!r}") from None
    console = Console(soft_wrap=True)
    try:
        options = PromptEvalOptions(task, counts, n, seed, selection, prompt_format, build)  # type: ignore[arg-type]
        overrides: dict[str, Any] = {} if max_chars is None else {"max_chars": max_chars}
        settings = PromptSettings(**overrides)
        report = evaluate_prompts(
            options, settings, lambda line: console.print(line, highlight=False)
        )
    except PromptError as exc:
        raise _fail(str(exc)) from None
    except ValidationError as exc:
        raise _settings_error("prompt settings", exc) from None
    table = Table(
        title=f"{task}: {report['n']} test texts, seed {seed}, {selection} examples, "
        f"{prompt_format} prompts (template {report['template_hash']})"
    )
    for column in ("model", "accuracy", "macro-F1", "prompt tokens (mean/max)", "s/prediction"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in report["rows"]:
        tokens = (
            f"{row['prompt_tokens_mean']:.0f} / {row['prompt_tokens_max']}"
            if row["prompt_tokens_max"] is not None
            else "-"
        )
        table.add_row(
            row["model"],
            _percent(row["accuracy"]),
            f"{row['macro_f1']:.3f}",
            tokens,
            f"{row['seconds_per_prediction']:.3f}",
        )
    Console(width=130).print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2), encoding="utf-8")
        console.print(f"results: {out}")


@app.command("predict")
def predict(
    texts: Annotated[list[str], typer.Argument(help="Texts to classify.")],
    task: Annotated[str, typer.Option(help="Task name.")] = "topic",
    policy: Annotated[str, typer.Option(help="auto, cache_only or model_only.")] = "auto",
    address: Annotated[str, typer.Option(help="Router address.")] = "127.0.0.1:50051",
    timeout: Annotated[float, typer.Option(help="Deadline in seconds.")] = 5.0,
) -> None:
    """Ask the router to classify TEXTS; prints each answer with its route and latency."""
    import grpc

    from router._generated.switchyard.v1 import router_pb2, router_pb2_grpc

    policies = {
        "auto": router_pb2.ROUTE_POLICY_AUTO,
        "cache_only": router_pb2.ROUTE_POLICY_CACHE_ONLY,
        "model_only": router_pb2.ROUTE_POLICY_MODEL_ONLY,
    }
    if policy not in policies:
        raise _fail(f"unknown policy {policy!r}; use auto, cache_only or model_only")
    with grpc.insecure_channel(address) as channel:
        stub = router_pb2_grpc.RouterStub(channel)
        request = router_pb2.PredictBatchRequest(task=task, texts=texts, policy=policies[policy])
        try:
            reply = stub.PredictBatch(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise _fail(f"{exc.code().name}: {exc.details()}") from None
    table = Table(title=f"{task} ({address})")
    for column in ("text", "label", "score", "route", "model", "server ms"):
        table.add_column(column)
    for text, result in zip(texts, reply.results, strict=True):
        table.add_row(
            text if len(text) <= 40 else text[:37] + "...",
            result.label,
            f"{result.score:.3f}",
            router_pb2.Route.Name(result.route).removeprefix("ROUTE_").lower(),
            f"{result.model} v{result.model_version}",
            f"{result.server_latency_ms:.2f}",
        )
    Console(width=110).print(table)


if __name__ == "__main__":
    app()
