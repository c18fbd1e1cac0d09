"""Redis clients for the router and the batch job, built from one set of settings.

The URL says where Redis is; the username, password and TLS files are separate settings, so
credentials can come from the environment (a Kubernetes Secret) while the URL stays plain
configuration. The password is a SecretStr: no repr, log line or error message shows it.
"""

from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.cluster
from pydantic import BaseModel, SecretStr, model_validator

from services.contracts.readable_file import ReadableFile

__all__ = ["RedisSettings", "async_client", "sync_client"]


class RedisSettings(BaseModel):
    """Mixed into RouterSettings and BatchSettings, so each reads them with its own prefix:
    SWITCHYARD_ROUTER_REDIS_PASSWORD, SWITCHYARD_BATCH_REDIS_PASSWORD, ...

    TLS is on for a rediss:// URL or when a CA file is set; without a CA file the system's
    trusted CAs verify the server. A client certificate and key are for a Redis that asks for
    one (redis-server's tls-auth-clients).
    """

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    redis_tls_ca_file: ReadableFile | None = None
    redis_tls_cert_file: ReadableFile | None = None
    redis_tls_key_file: ReadableFile | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "RedisSettings":
        # Messages name settings only: never the URL, which may hold a password.
        url = urlsplit(self.redis_url)
        in_url = url.username is not None or url.password is not None
        if in_url and (self.redis_username is not None or self.redis_password is not None):
            raise ValueError(
                "Redis credentials are in redis_url and in redis_username/redis_password; "
                "give them in one place"
            )
        if (self.redis_tls_cert_file is None) != (self.redis_tls_key_file is None):
            raise ValueError("redis_tls_cert_file and redis_tls_key_file go together")
        if self.redis_tls and url.scheme not in {"redis", "rediss"}:
            raise ValueError("Redis TLS needs a redis:// or rediss:// URL")
        return self

    @property
    def redis_tls(self) -> bool:
        return urlsplit(self.redis_url).scheme == "rediss" or self.redis_tls_ca_file is not None


def _url_and_options(settings: RedisSettings) -> tuple[str, dict[str, Any]]:
    url = settings.redis_url
    options: dict[str, Any] = {}
    if settings.redis_username is not None:
        options["username"] = settings.redis_username
    if settings.redis_password is not None:
        options["password"] = settings.redis_password.get_secret_value()
    if settings.redis_tls:
        # The scheme picks the TLS connection class in redis-py, for every client kind.
        url = urlsplit(url)._replace(scheme="rediss").geturl()
        files = {
            "ssl_ca_certs": settings.redis_tls_ca_file,
            "ssl_certfile": settings.redis_tls_cert_file,
            "ssl_keyfile": settings.redis_tls_key_file,
        }
        options |= {name: str(path) for name, path in files.items() if path is not None}
    return url, options


def sync_client(settings: RedisSettings, cluster: bool = False, **kwargs: Any) -> "redis.Redis":
    """A client for the batch job and the CLI; a RedisCluster client when `cluster`, which
    finds every node from the one the URL names. `kwargs` are redis-py options such as
    socket_timeout."""
    url, options = _url_and_options(settings)
    if cluster:
        client = redis.cluster.RedisCluster.from_url(url, **options, **kwargs)
        return client  # type: ignore[return-value]
    return redis.Redis.from_url(url, **options, **kwargs)


def async_client(
    settings: RedisSettings, cluster: bool = False, **kwargs: Any
) -> "redis.asyncio.Redis":
    """A redis.asyncio client for the router; a RedisCluster client when `cluster`."""
    url, options = _url_and_options(settings)
    if cluster:
        client = redis.asyncio.RedisCluster.from_url(url, **options, **kwargs)
        return client  # type: ignore[return-value]
    return redis.asyncio.Redis.from_url(url, **options, **kwargs)
