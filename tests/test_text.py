import pytest

from edge_asr.text import TextNormalization


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello, World!", "hello world"),
        ("Don\u2019t stop - the café's open.", "don't stop the cafe's open"),
        ("  many   spaces\n\tand tabs ", "many spaces and tabs"),
        ("mother-in-law", "mother in law"),
    ],
)
def test_default_normalization(text, expected):
    assert TextNormalization()(text) == expected


def test_options():
    keep_case = TextNormalization(lowercase=False, keep_punctuation="")
    assert keep_case("Don't Stop") == "Dont Stop"
    letters = TextNormalization(alphabet="abcdefghijklmnopqrstuvwxyz")
    assert letters("room 101 is free") == "room is free"
    assert TextNormalization.from_dict(letters.to_dict()) == letters
    with pytest.raises(ValueError, match="unknown"):
        TextNormalization.from_dict({"shout": True})
