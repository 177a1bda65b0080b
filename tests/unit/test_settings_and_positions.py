"""The config file and the saved reading positions: round trips, edits, corruption."""

from __future__ import annotations

import json
from pathlib import Path

from vvreader.config import Config, load_config, save_config
from vvreader.state import Position, PositionStore, locate
from vvreader.themes import load_themes


def test_config_round_trip_with_odd_strings(tmp_path: Path) -> None:
    path = tmp_path / "c" / "config.toml"
    c = Config(
        voice='my "voice"\\\n\u00e9',
        cfg_scale=2.25,
        steps=9,
        theme="vvreader-light",
        autoplay=False,
        keymap={"next-sentence": "x,right", "play-pause": "space"},
    )
    save_config(c, path)
    loaded, warnings = load_config(path)
    assert loaded == c and warnings == []
    assert not list(path.parent.glob(".config.toml.*"))  # no temporary left behind


def test_missing_config_gives_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "none.toml") == (Config(), [])


def test_corrupt_config_is_set_aside_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("voice = \n[[[")
    config, warnings = load_config(path)
    assert config == Config()
    assert len(warnings) == 1 and "not valid TOML" in warnings[0]
    assert not path.exists()
    (aside,) = tmp_path.glob("config.toml.corrupt-*")
    assert aside.read_text() == "voice = \n[[["


def test_wrong_types_and_unknown_keys_are_ignored_with_warnings(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('steps = "many"\ncfg_scale = 2\nautoplay = 1\ncolour = "red"\n')
    config, warnings = load_config(path)
    assert config.steps == 5 and config.cfg_scale == 2.0 and config.autoplay is True
    assert len(warnings) == 3


DOC = (
    "# Title\n\nFirst sentence here. Second sentence is the one we stopped at. "
    "Third sentence.\n\nAnother paragraph. Second sentence is the one we stopped at.\n"
)


def test_position_found_after_edits_before_it() -> None:
    start = DOC.index("Second")
    pos = Position.at(DOC, start, DOC.index(" Third"), 2)
    assert locate(DOC, pos) == start
    edited = "# Title\n\nA new first paragraph was added.\n\n" + DOC[9:]
    assert edited[locate(edited, pos) :].startswith("Second sentence is the one we stopped")
    # of the two identical sentences, the one after the same context wins
    assert locate(edited, pos) == edited.index("Second")
    # the sentence itself edited: its beginning still anchors it
    changed = DOC.replace("the one we stopped at. Third", "the one we stopped at, then. Third")
    assert locate(changed, pos) == start
    # the sentence gone: the text before it anchors the place
    gone = DOC.replace("Second sentence is the one we stopped at. Third", "Third")
    assert gone[locate(gone, pos) :].startswith("Third")


def test_store_survives_a_corrupt_file_and_finds_moved_files(tmp_path: Path) -> None:
    path = tmp_path / "positions.json"
    path.write_text("{not json")
    store = PositionStore(path)
    assert store.warnings and "corrupt" in store.warnings[0]
    assert list(tmp_path.glob("positions.json.corrupt-*"))
    doc = tmp_path / "book.md"
    store.put(doc, Position.at(DOC, 10, 20, 1))
    store.save()
    again = PositionStore(path)
    assert again.warnings == []
    assert again.get(doc, DOC).offset == 10
    # the same text under another name is recognised by its fingerprint
    assert again.get(tmp_path / "renamed.md", DOC).offset == 10
    assert again.get(tmp_path / "other.md", "different text") is None
    assert json.loads(path.read_text())["version"] == 1


def test_themes_load_with_reading_colours() -> None:
    themes, warnings = load_themes()
    names = {t.name for t in themes}
    assert {"vvreader-dark", "vvreader-light", "vvreader-high-contrast"} <= names
    assert warnings == []
    for t in themes:
        assert {"reading-highlight", "reading-cursor"} <= set(t.variables)


def test_speed_setting_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("speed = 1.5\n")
    assert load_config(path) == (Config(speed=1.5), [])
    path.write_text("speed = 2\n")
    assert load_config(path)[0].speed == 2.0
    path.write_text("speed = 4.0\n")
    config, warnings = load_config(path)
    assert config.speed == 1.0 and "speed should be from 0.5 to 3.0" in warnings[0]
