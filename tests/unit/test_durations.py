import pytest

from fleet.core.durations import parse


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), ("10", 10),
                                          (5, 5), ("1.5s", 1.5), ("1m", 60)])
def test_parse(text, seconds):
    assert parse(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "10x", "s", "1m 30s", "-5s"])
def test_parse_rejects_with_a_hint(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse(text)
