"""The rules of choosing a voice, without a UI."""

from __future__ import annotations

from vvreader.voice_choice import VoiceChoice


class Reader:
    """Plays the part of the reading screen: records what the choice asked of it."""

    def __init__(self, voice: str = "") -> None:
        self.voice = voice
        self.log: list[tuple[str, str]] = []

    def choice(self) -> VoiceChoice:
        return VoiceChoice(
            current=lambda: self.voice,
            use=self.use,
            read_here=lambda: self.log.append(("read here", self.voice)),
            fetch=lambda voice: self.log.append(("fetch", voice)),
            say=lambda text: self.log.append(("say", text)),
        )

    def use(self, voice: str) -> None:
        self.voice = voice
        self.log.append(("use", voice))


def test_the_loaders_voice_is_taken_only_when_none_is_set() -> None:
    assert Reader().choice().offer(["a", "b"], set(), "b") == "b"
    assert Reader().choice().offer(["a", "b"], set(), "") is None  # the engine chooses
    assert Reader("a").choice().offer(["a", "b"], set(), "b") is None


def test_next_goes_round_and_needs_the_voices() -> None:
    reader = Reader("a")
    choice = reader.choice()
    choice.next()
    assert reader.log == [("say", "The voices are known once the model is loaded.")]
    choice.offer(["a", "b", "c"], set())
    for want in ("b", "c", "a"):
        choice.next()
        assert reader.voice == want
    reader.voice = "elsewhere.wav"  # not on offer: the first
    choice.next()
    assert reader.voice == "a"


def test_a_missing_voice_is_fetched_once_then_used() -> None:
    reader = Reader("a")
    choice = reader.choice()
    choice.offer(["a", "new", "other"], {"new", "other"})
    choice.choose("new")
    choice.choose("other")  # one download at a time
    assert reader.log == [("fetch", "new"), ("say", "Still downloading voice new.")]
    assert reader.voice == "a"  # the current voice reads on
    choice.fetched("new", ok=True)
    assert reader.voice == "new" and choice.missing == {"other"} and choice.fetching is None


def test_a_failed_download_leaves_the_voice_missing() -> None:
    reader = Reader("a")
    choice = reader.choice()
    choice.offer(["a", "new"], {"new"})
    choice.choose("new")
    choice.fetched("new", ok=False)
    assert reader.voice == "a" and choice.missing == {"new"} and choice.fetching is None


def test_previews_are_undone_when_the_picker_is_cancelled() -> None:
    reader = Reader("a")
    choice = reader.choice()
    choice.offer(["a", "b", "new"], {"new"})
    choice.picking()
    choice.preview("b")
    choice.preview("new")  # not downloaded: not previewed
    assert reader.log == [("use", "b"), ("read here", "b")]
    choice.picked(None)
    assert reader.voice == "a"
    choice.picking()
    choice.preview("b")
    choice.picked("b")
    assert reader.voice == "b" and reader.log[-1] == ("read here", "b")
    choice.picking()
    choice.picked("new")  # chosen in the picker: downloaded first
    assert reader.log[-1] == ("fetch", "new") and reader.voice == "b"
