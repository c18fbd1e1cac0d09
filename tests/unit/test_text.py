from hypothesis import given
from hypothesis import strategies as st

from services.contracts.text import normalize_text


def test_folds_case_width_and_whitespace() -> None:
    assert normalize_text("  Hello\tWORLD \n") == "hello world"
    assert normalize_text("ｆｕｌｌ　ｗｉｄｔｈ") == "full width"  # noqa: RUF001
    assert normalize_text("Straße") == "strasse"
    assert normalize_text("ﬁne") == "fine"


def test_variants_share_one_key() -> None:
    variants = ["Rates rise again", "rates  rise again", " RATES rise\nagain ", "Ｒates rise again"]  # noqa: RUF001
    assert len({normalize_text(text) for text in variants}) == 1


def test_distinct_texts_stay_distinct() -> None:
    assert normalize_text("rates rise") != normalize_text("rates fall")


@given(st.text())
def test_idempotent_and_trimmed(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once
    assert once == once.strip()
    assert "  " not in once
