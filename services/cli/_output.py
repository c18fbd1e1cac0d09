"""What every command group shares: one-line errors (exit code 2), settings errors that name
the setting but never its value, and the client-side TLS options."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from pydantic import ValidationError

    from router.client import TlsConfig

__all__ = [
    "BatchBuild",
    "BatchRedisCluster",
    "BatchRedisUrl",
    "ClientTlsCaFile",
    "ClientTlsCertFile",
    "ClientTlsKeyFile",
    "ClientTlsServerName",
    "fail",
    "percent",
    "say",
    "settings_error",
    "tls_config",
    "tls_option",
]

_TLS_HELP = {
    "ca": "Connect with TLS, trusting this CA (the system's CAs when only other TLS options "
    "are given).",
    "cert": "Client certificate, for a router that requires one (mutual TLS).",
    "key": "Key of --tls-cert-file.",
    "server-name": "Name the router's certificate must hold, when the address is not in it "
    "(e.g. 127.0.0.1 inside the router's container).",
}


def fail(message: str) -> typer.Exit:
    """Print `message` as one error line on stderr; raise the result to exit with code 2."""
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=2)


def settings_error(what: str, exc: "ValidationError") -> typer.Exit:
    """One line per problem, naming the setting but never echoing its value (a password)."""
    problems = [
        ": ".join(filter(None, [".".join(str(part) for part in error["loc"]), error["msg"]]))
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    return fail(f"{what}: {'; '.join(problems)}")


def say(line: str) -> None:
    """A progress line, printed as it is (no markup, no highlighting)."""
    Console(soft_wrap=True).print(line, highlight=False, markup=False)


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def tls_option(kind: str, envvar: str) -> Any:
    """The typer option `--tls-<kind>-file` (or `--tls-server-name`), read from `envvar` too."""
    return typer.Option(envvar=envvar, help=_TLS_HELP[kind])


def tls_config(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None, server_name: str | None
) -> "TlsConfig | None":
    """TLS settings for the client when any TLS option is given; None for plaintext."""
    if ca_file is None and cert_file is None and key_file is None and server_name is None:
        return None
    from router.client import TlsConfig

    return TlsConfig(ca_file, cert_file, key_file, server_name)


# The TLS options of the commands that call the router as an app does (predict, demo).
ClientTlsCaFile = Annotated[Path | None, tls_option("ca", "SWITCHYARD_CLIENT_TLS_CA_FILE")]
ClientTlsCertFile = Annotated[Path | None, tls_option("cert", "SWITCHYARD_CLIENT_TLS_CERT_FILE")]
ClientTlsKeyFile = Annotated[Path | None, tls_option("key", "SWITCHYARD_CLIENT_TLS_KEY_FILE")]
ClientTlsServerName = Annotated[
    str | None, tls_option("server-name", "SWITCHYARD_CLIENT_TLS_SERVER_NAME")
]


# The offline commands' (batch, quality) connection to the build and to Redis; the
# environment's SWITCHYARD_BATCH_* settings fill what they leave out.
BatchBuild = Annotated[
    Path | None, typer.Option(help="Build folder of `switchyard models build` [build].")
]
BatchRedisUrl = Annotated[
    str | None, typer.Option(help="Redis URL; prefer SWITCHYARD_BATCH_REDIS_URL.")
]
BatchRedisCluster = Annotated[
    bool | None,
    typer.Option(
        "--redis-cluster/--no-redis-cluster",
        help="The URL names a node of a Redis Cluster [SWITCHYARD_BATCH_REDIS_CLUSTER].",
    ),
]
