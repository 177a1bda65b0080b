"""Word follow's arithmetic: syllables, words with their offsets, the spoken fraction from
the engine's token marks, and the word at a fraction."""

from __future__ import annotations

from vvreader.narration.word_timing import TokenMark, spoken_fraction, syllables, word_at, words


def test_syllables() -> None:
    counts = {w: syllables(w) for w in ("a", "cat", "table", "make", "banana", "1990", "free")}
    assert counts == {
        "a": 1,
        "cat": 1,
        "table": 2,
        "make": 1,
        "banana": 3,
        "1990": 6,
        "free": 1,
    }


def test_words_keep_their_offsets_and_skip_punctuation() -> None:
    text = "**Don't** stop—now, 42 times!"
    spans = words(text, offset=100)
    assert [text[a - 100 : b - 100] for a, b, _ in spans] == ["Don't", "stop", "now", "42", "times"]
    assert spans[0][:2] == (102, 107)


def test_without_marks_the_fraction_is_the_time() -> None:
    assert spoken_fraction(0, 1000, []) == 0.0
    assert spoken_fraction(250, 1000, []) == 0.25
    assert spoken_fraction(2000, 1000, []) == 1.0


def test_marks_calibrate_the_fraction() -> None:
    # The engine read 5 of 20 tokens before its first frame, then 5 more per 2 frames of
    # 100 samples, all read at sample 600; the audio lasts 1000 samples.
    marks = [TokenMark(100 * (k + 1), min(20, 5 + 5 * ((k + 1) // 2)), 20) for k in range(10)]
    assert spoken_fraction(0, 1000, marks) == 0.0
    assert abs(spoken_fraction(200, 1000, marks) - 0.25) < 1e-9  # 10 read, 5 of them spoken
    assert abs(spoken_fraction(600, 1000, marks) - 0.75) < 1e-9  # all read, the lead left
    assert abs(spoken_fraction(800, 1000, marks) - 0.875) < 1e-9  # then on to the end
    assert spoken_fraction(1000, 1000, marks) == 1.0
    # Marks without token counts (an engine that gives none) fall back to time.
    assert spoken_fraction(300, 1000, [TokenMark(100, 0, 0)]) == 0.3


def test_the_word_at_a_fraction_by_syllables() -> None:
    spans = [(0, 1, 1), (2, 8, 3), (9, 12, 1)]  # "a banana cat": 5 syllables
    assert word_at(spans, 0.0) == (0, 1)
    assert word_at(spans, 0.19) == (0, 1)
    assert word_at(spans, 0.21) == (2, 8)
    assert word_at(spans, 0.79) == (2, 8)
    assert word_at(spans, 0.81) == (9, 12)
    assert word_at(spans, 1.0) == (9, 12)
    assert word_at([], 0.5) is None
