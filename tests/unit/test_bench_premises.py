"""The benchmark refuses what it cannot vouch for: a row's premise is which route answered."""

from typing import Any, cast

from bench.routes import RoutedCalls, premise
from bench.stack_bench import target_ratios, zipf_mix
from bench.tracing_cost import export_premises
from router.client import AsyncRouterClient, Route


def calls(route: Route | None, **answered: int) -> RoutedCalls:
    routed = RoutedCalls(cast(AsyncRouterClient, None), "topic", ["text"], route)
    for name, count in answered.items():
        routed.routes[Route(name)] += count
    return routed


def test_a_row_answered_by_another_route_fails_its_premise() -> None:
    assert premise(calls(Route.CACHE, cache=10)) == ""
    assert premise(calls(Route.CACHE, cache=9, model=1)) == (
        "1 of 10 answers did not come from the cache"
    )
    assert premise(calls(Route.MODEL)) == "no answer at all"
    assert premise(calls(None, cache=8, model=2)) == ""  # a mix has no route to check
    assert calls(None, cache=8, model=2).cache_share == 0.8


def row(path: str, concurrency: int, premise_text: str = "", **numbers: float) -> dict[str, Any]:
    values = {"p50_ms": 1.0, "throughput_per_s": 100.0, "server_cpu_ms_per_call": 1.0,
              "client_cpu_ms_per_call": 1.0} | numbers  # fmt: skip
    return {"path": path, "concurrency": concurrency, "premise": premise_text, **values}


def test_a_ratio_made_of_a_failed_row_is_refused() -> None:
    rows = [
        row("(a) floor: grpc.aio + Redis GET", 1),
        row("(b) router cache route, tier warm", 1, "3 of 90 answers did not come from the cache"),
        row("(b0) router cache route, tier off", 1),
        row("(c) direct Triton (student)", 1),
        row("(d) router model route", 1),
        row("(e) teacher, onnxruntime + gRPC", 1),
        row("(f) student, onnxruntime in-process", 1, client_cpu_ms_per_call=2.0),
        row("(f1) student in-process, 1 thread", 1, client_cpu_ms_per_call=0.5),
        row("(f2) student in-process, 2 threads x 1-thread session", 2, throughput_per_s=300.0),
        row("(a) floor", 8),
        row("(b) cache route", 8),
        row("(d) model route", 1),
        row("(d) model route", 8, throughput_per_s=150.0),
    ]
    ratios = {r["ratio"]: r for r in target_ratios(rows, [1, 8])}
    warm = ratios["cache route p50, tier warm / floor p50 (b/a)"]
    assert warm["premise"] == "3 of 90 answers did not come from the cache"
    assert ratios["cache route p50, tier off / floor p50 (b0/a)"]["premise"] == ""
    saturated = next(r for name, r in ratios.items() if name.startswith("model route throughput"))
    # Against the in-process student at its best: the most throughput, the least CPU.
    assert "(8 clients)" in saturated["ratio"] and saturated["value"] == 0.5
    assert "(f2)" in saturated["ratio"]
    cpu = next(r for name, r in ratios.items() if name.startswith("server CPU"))
    assert "(f1)" in cpu["ratio"] and cpu["value"] == 2.0


def test_the_mix_draws_the_head_by_rank_and_the_tail_evenly() -> None:
    cached = [f"hot {i}" for i in range(50)]
    unseen = [f"cold {i}" for i in range(10)]
    mix = zipf_mix(cached, unseen, 10_000, head=0.8)
    assert mix == zipf_mix(cached, unseen, 10_000, head=0.8)  # seeded
    head = [text for text in mix if text.startswith("hot")]
    assert 0.77 < len(head) / len(mix) < 0.83
    assert head.count("hot 0") > 5 * head.count("hot 9")


def test_tracing_ratios_need_the_spans_their_rows_promise() -> None:
    answered = {"off": 1000, "on": 1000, "1%": 1000}
    assert export_premises({"on": 995, "1%": 9}, answered) == {"on": "", "1%": ""}
    # Spans the exporter dropped, or a sampler that kept all or nothing: refused.
    failed = export_premises({"on": 500, "1%": 0}, answered)
    assert failed == {
        "on": "the traced router exported 500 of 1000 requests",
        "1%": "the 1% router exported 0 of 1000 requests",
    }
    assert export_premises({"on": 1000, "1%": 1000}, answered)["1%"]
