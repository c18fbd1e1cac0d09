"""The router's in-memory count of uncached texts, between two flushes to Redis."""

from router.top_misses import MissCounter, MissCounts


def test_texts_count_by_their_normalised_form_and_a_take_starts_afresh() -> None:
    counter = MissCounter(capacity=2)
    counter.add("ns", ["Hot text", "hot  TEXT", "rare", "hot text", "other"])
    counter.add("other-ns", ["x"])
    taken = counter.take()
    # The `capacity` most frequent of each namespace; the total counts every text.
    assert taken == [
        MissCounts("ns", {"hot text": 3, "rare": 1}, 5),
        MissCounts("other-ns", {"x": 1}, 1),
    ]
    assert counter.take() == []


def test_between_flushes_at_most_four_times_the_capacity_is_held() -> None:
    counter = MissCounter(capacity=2)
    counter.add("ns", [f"text {i}" for i in range(20)] + ["text 19"] * 3)
    (counts,) = counter.take()
    assert counts.total == 23
    # Texts past the first 8 are not held, so text 19 is counted by the total alone.
    assert set(counts.texts) <= {f"text {i}" for i in range(8)}
    assert "text 19" not in counts.texts


def test_capacity_zero_counts_nothing() -> None:
    counter = MissCounter(capacity=0)
    counter.add("ns", ["a", "b"])
    assert not counter.enabled
    assert counter.take() == []
