"""The router's domain errors. `router.servicer` maps each to one gRPC status code."""

__all__ = [
    "CacheMiss",
    "DeadlineExceeded",
    "DependencyUnavailable",
    "InvalidRequest",
    "RouterError",
]


class RouterError(Exception):
    """Base class: the message is sent to the client as the status details."""


class InvalidRequest(RouterError):
    """The request itself is wrong: unknown task, empty or oversized text, too many texts."""


class CacheMiss(RouterError):
    """ROUTE_POLICY_CACHE_ONLY and the cache does not hold a text."""


class DependencyUnavailable(RouterError):
    """Redis or Triton is down or failing, and nothing else can answer."""


class DeadlineExceeded(RouterError):
    """The client's deadline ran out before an answer was ready."""
