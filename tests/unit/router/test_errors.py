"""The one status table, crossed over the wire: each domain error reaches the client with its
code and message, a subclass keeps its parent's code, and anything else is INTERNAL without
details; the request metric counts the code the client saw."""

import logging

import grpc
import pytest

from router.client import RequestError
from router.errors import (
    CacheMiss,
    DeadlineExceeded,
    DependencyUnavailable,
    InvalidRequest,
    RouterError,
)
from router.servicer import STATUS_OF, status_of
from services.processes.redis_server import RedisServer
from tests.unit.router.conftest import Bed, bed_settings, run_on_bed
from tests.unit.router.fakes import Boom, FakeStudent


class TritonOverloaded(DependencyUnavailable):
    """A subclass the table does not name."""


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidRequest("the model refused the text"), grpc.StatusCode.INVALID_ARGUMENT),
        (CacheMiss("not cached"), grpc.StatusCode.NOT_FOUND),
        (DependencyUnavailable("triton could not run: down"), grpc.StatusCode.UNAVAILABLE),
        (DeadlineExceeded("no answer within 5 ms"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (TritonOverloaded("triton is overloaded"), grpc.StatusCode.UNAVAILABLE),
        (Boom("a domain error nobody mapped"), grpc.StatusCode.INTERNAL),
    ],
)  # fmt: skip
def test_domain_errors_cross_the_wire_with_their_code_and_message(
    redis_server: RedisServer, error: RouterError, code: grpc.StatusCode
) -> None:
    async def body(bed: Bed) -> None:
        with pytest.raises(RequestError) as raised:
            await bed.client.predict("topic", "any text")
        assert (raised.value.code, raised.value.details) == (code, str(error))
        counted = bed.metric(
            "switchyard_requests_total", method="Predict", task="topic", route="none",
            code=code.name,
        )  # fmt: skip
        assert counted == 1

    run_on_bed(bed_settings(redis_server.url), body, FakeStudent(failures=[error]))


def test_an_unexpected_exception_is_internal_and_logged_without_the_text(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(bed: Bed) -> None:
        with pytest.raises(RequestError) as raised:
            await bed.client.predict("topic", "a private text")
        assert raised.value.code == grpc.StatusCode.INTERNAL
        assert raised.value.details == "internal error; the server log has details"

    with caplog.at_level(logging.ERROR, logger="router.servicer"):
        run_on_bed(bed_settings(redis_server.url), body, FakeStudent(failures=[KeyError("x")]))
    assert "Predict failed for task topic: KeyError" in caplog.text
    assert "a private text" not in caplog.text


def test_status_of_walks_the_class_hierarchy() -> None:
    for kind, code in STATUS_OF.items():
        assert status_of(kind("x")) == code
    assert status_of(TritonOverloaded("x")) == grpc.StatusCode.UNAVAILABLE
    assert status_of(Boom("x")) == grpc.StatusCode.INTERNAL
