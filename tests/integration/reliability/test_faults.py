"""The fast fault scenarios of `switchyard reliability`, on one private testbed per module.

Each scenario breaks Redis, Triton or the router under real traffic and returns its checks;
a failure shows every check and number of the scenario.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.reliability import scenarios
from services.reliability.run import FAST_SCENARIOS
from services.reliability.scenarios import Corpus, ScenarioResult
from services.reliability.testbed import Testbed


@pytest.fixture(scope="module")
def testbed(tiny_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    with Testbed(tmp_path_factory.mktemp("testbed"), tiny_build / "model_repository") as bed:
        yield bed


@pytest.fixture(scope="module")
def corpus(testbed: Testbed) -> Corpus:
    return Corpus.publish(testbed)


def _explain(result: ScenarioResult) -> str:
    checks = [f"  [{'x' if ok else ' '}] {name}" for name, ok in result.checks.items()]
    numbers = [f"  {name}: {value}" for name, value in result.numbers.items()]
    return "\n".join([f"{result.name}: {result.fault}", *checks, *numbers, f"  {result.codes}"])


@pytest.mark.parametrize("name", list(FAST_SCENARIOS))
def test_scenario(name: str, testbed: Testbed, corpus: Corpus) -> None:
    result = FAST_SCENARIOS[name](testbed, corpus)
    assert result.sent > 0
    assert result.checks, "a scenario without checks proves nothing"
    assert result.passed, _explain(result)


def test_short_soak(testbed: Testbed, corpus: Corpus) -> None:
    """The soak's checks on a short run at half the capacity, so tests running beside it on
    shared CI cores cannot push it over; `switchyard reliability --soak-seconds` runs the real
    soak at 80%."""
    result = scenarios.soak(testbed, corpus, seconds=16, load=0.5, probe_s=3)
    assert result.numbers["achieved rate (req/s)"] > 0.9 * result.numbers["offered rate (req/s)"]
    assert result.passed, _explain(result)
