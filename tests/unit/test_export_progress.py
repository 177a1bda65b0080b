"""An export's progress in words, and as a bar that fits its line."""

from __future__ import annotations

from types import SimpleNamespace

from vvreader.humanize import describe_export, export_bar


def _progress(**kw: object) -> SimpleNamespace:
    values = dict(
        fraction=0.42,
        speed=2.31,
        seconds_left=725.0,
        audio_seconds=3725.0,
        chapter="The Storm",
        chapter_number=3,
        chapters=12,
    )
    values.update(kw)
    return SimpleNamespace(**values)


def test_export_progress_in_words() -> None:
    assert describe_export(_progress()) == (
        "42% · 3/12 The Storm · 1h02m of audio · 2.3x real time · 12m05s left"
    )
    # Before the engine has made anything in this run: no pace, no time left.
    assert describe_export(_progress(speed=0.0, seconds_left=None, fraction=0.0)) == (
        "0% · 3/12 The Storm · 1h02m of audio"
    )
    # Done: no time left; a title's control characters are spaces.
    assert describe_export(_progress(fraction=1.0, seconds_left=0.0, chapter="a\x1b[2Jb")) == (
        "100% · 3/12 a [2Jb · 1h02m of audio · 2.3x real time"
    )


def test_the_export_bar_fits_its_width() -> None:
    p = _progress(chapter="The Storm, and a much longer title than the line has room for")
    wide = export_bar(p, 200)
    assert wide.startswith("[" + "#" * 12 + "-" * 18 + "] 42% · 3/12 The Storm, and a much")
    assert wide.endswith("12m05s left")
    for width in (100, 79, 60, 40, 12):
        line = export_bar(p, width)
        assert len(line) <= width, (width, line)
        assert line.startswith(("[#", "42%")), line
    assert "…" in export_bar(p, 100) and export_bar(p, 100).endswith("12m05s left")
    # Wide characters take two columns.
    cjk = export_bar(_progress(chapter="章" * 80), 100)
    assert sum(2 if c == "章" else 1 for c in cjk) <= 100


def test_the_pace_and_the_time_left_count_only_what_this_run_made() -> None:
    from vvreader.export import Progress
    from vvreader.export.render import SETTLED

    def at(made: int, resumed: int = 0) -> Progress:
        done = made + resumed
        return Progress(
            done=done,
            total=100,
            made=made,
            chars_done=10 * done,
            chars_total=1000,
            chars_made=10 * made,
            audio_seconds=2.0 * done,
            made_seconds=2.0 * made,
            elapsed=0.5 * made,
            chapter="c",
            chapter_number=1,
            chapters=1,
        )

    # The first batch comes out together after the warm-up: no time left said yet.
    assert at(SETTLED - 1).seconds_left is None
    assert at(SETTLED).seconds_left == (1000 - 10 * SETTLED) * 0.5 / 10
    assert at(SETTLED).speed == 4.0 and at(SETTLED).fraction == SETTLED / 100
    # Utterances from the work folder are done but took no time: pace and time left
    # come from those made now.
    resumed = at(20, resumed=50)
    assert resumed.speed == 4.0 and resumed.fraction == 0.7
    assert resumed.seconds_left == 300 * 0.5 / 10
