"""The speech plan: what is said, spans back to the source, pauses and navigation."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

import pytest

from vvreader.text.markdown import parser
from vvreader.text.plan import PlanSettings, build_plan
from vvreader.text.readers import load_document, parse

SAMPLE = Path(__file__).parents[1] / "fixtures" / "sample.md"
MARKUP = re.compile(r"[*_`#|<>\[\]\\]|~~|\]\(|https?://|&\w+;|\x1b")


def speak(src: str, **policy) -> list[str]:
    return [u.speak for u in build_plan(parse(src), PlanSettings(**policy))]


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("# ATX *heading*", ["ATX heading."]),
        ("Setext\n======", ["Setext."]),
        ("A **strong** and _em_ and ~~gone~~ word.", ["A strong and em and gone word."]),
        ("Use `a_b*c` here.", ["Use a b c here."]),
        ('Go [there](http://x.org/a_b "T") now.', ["Go there now."]),
        ("Go [there][r] now.\n\n[r]: http://x.org", ["Go there now."]),
        ("See https://www.python.org/dev/ now.", ["See python dot org now."]),
        ("See <https://docs.x.org/a> now.", ["See docs dot x dot org now."]),
        ("Mail <jane@x.org> now.", ["Mail jane at x dot org now."]),
        ("![A cat](cat.png) sleeps.", ["A cat sleeps."]),
        ("Some <b>bold</b> html.", ["Some bold html."]),
        ("Escaped \\*star\\* and &copy; sign.", ["Escaped star and © sign."]),
        ("Hard  \nbreak here.", ["Hard break here."]),
        ("- one\n- two\n  - nested", ["one.", "two.", "nested."]),
        ("1. first\n\n2. second\n", ["first.", "second."]),
        ("> Quoted text.\n>\n> > Deeper.", ["Quoted text.", "Deeper."]),
        ("```js\nlet a = 1;\n```", ["Code block, js, 1 line."]),
        ("    code\n    more", ["Code block, 2 lines."]),
        ("<div>\nraw html\n</div>", []),
        ("<!-- hidden -->\n\nShown.", ["Shown."]),
        ("---\ntitle: x\n---\nBody.", ["Body."]),
        ("A\n\n***\n\nB", ["A", "B"]),
        ("| H1 | H2 |\n|---|---|\n| a | b |", ["Table: H1, H2.", "H1: a; H2: b."]),
        ("Text[^1].\n\n[^1]: Note body.", ["Text.", "Footnote 1: Note body."]),
        ("[bold red]x[/] plain", ["bold red x plain"]),
    ],
)
def test_constructs(src, expected):
    assert speak(src) == expected


@pytest.mark.parametrize(
    ("policy", "src", "expected"),
    [
        ({"tables": "skip"}, "| H |\n|---|\n| a |\n\nAfter.", ["After."]),
        ({"code": "skip"}, "```\nx\n```\n\nAfter.", ["After."]),
        ({"code": "read"}, "```\nprint(1)\n```", ["print(1)"]),
        ({"urls": "skip"}, "See https://x.org now.", ["See now."]),
        ({"images": "skip"}, "![A cat](c.png) sleeps.", ["sleeps."]),
        ({"footnotes": "skip"}, "Text[^1].\n\n[^1]: Note.", ["Text."]),
        ({"heading_period": False}, "# Title", ["Title"]),
        ({"normalize": False}, "Mr. Smith paid $5.", ["Mr. Smith paid $5."]),
    ],
)
def test_policies(policy, src, expected):
    assert speak(src, **policy) == expected


def test_sample_spans_and_no_markup():
    doc = load_document(str(SAMPLE))
    plan = build_plan(doc)
    assert len(plan) > 15
    for i, u in enumerate(plan):
        assert u.index == i
        assert u.text == doc.text[u.start : u.end] and u.text.strip() == u.text
        block = doc.blocks[u.block]
        assert block.start <= u.start < u.end <= block.end
        assert not MARKUP.search(u.speak), u.speak
        assert "\n" not in u.speak


def _visible_words(src: str) -> list[str]:
    """Words a reader sees, from markdown-it's own HTML (code, footnotes, raw HTML dropped)."""
    rendered = parser().render(src)
    for pattern in (
        r"<pre>.*?</pre>",
        r"<section class=\"footnotes\">.*?</section>",
        r"<sup class=\"footnote-ref\">.*?</sup>",
        r"<div>.*?</div>",
        r"<!--.*?-->",
    ):
        rendered = re.sub(pattern, " ", rendered, flags=re.DOTALL)
    rendered = re.sub(r"<img[^>]*alt=\"([^\"]*)\"[^>]*>", r" \1 ", rendered)
    text = html.unescape(re.sub(r"<[^>]+>", " ", rendered))
    text = re.sub(r"\S+@\S+|https?://\S+", " ", text)
    return re.findall(r"\w+", text)


def test_reader_words_reach_speak_in_order():
    doc = load_document(str(SAMPLE))
    plan = build_plan(doc, PlanSettings(normalize=False))
    body = doc.text[doc.blocks[1].start :]
    spoken = iter(w for u in plan if u.kind != "footnote" for w in re.findall(r"\w+", u.speak))
    missing = [w for w in _visible_words(body) if not any(w == s for s in spoken)]
    assert missing == []


def test_pauses_follow_structure():
    s = PlanSettings()
    plan = build_plan(parse("# H\n\nOne. Two.\n\n- a\n- b\n\nEnd.\n\n## Next\n\nLast."))
    got = [(u.speak, u.pause_after) for u in plan]
    assert got == [
        ("H.", s.pause_heading_ms),
        ("One.", s.pause_sentence_ms),
        ("Two.", s.pause_paragraph_ms),
        ("a.", s.pause_list_item_ms),
        ("b.", s.pause_paragraph_ms),
        ("End.", s.pause_section_ms),
        ("Next.", s.pause_heading_ms),
        ("Last.", s.pause_section_ms),
    ]
    assert s.pause_sentence_ms < s.pause_list_item_ms <= s.pause_heading_ms
    assert s.pause_heading_ms < s.pause_paragraph_ms < s.pause_section_ms


def test_long_sentence_split_not_merged():
    long = "The road went on, " * 30 + "and ended."
    plan = build_plan(parse(f"Short one. {long} Tail."), PlanSettings(max_utterance_chars=80))
    sentences = [u.sentence for u in plan]
    assert sentences[0] == 0 and sentences[-1] == 2
    middle = [u for u in plan if u.sentence == 1]
    assert len(middle) > 3 and all(len(u.text) <= 80 for u in middle)
    assert [u.part for u in middle] == list(range(len(middle)))
    assert all(u.pause_after == PlanSettings().pause_clause_ms for u in middle[:-1])
    assert " ".join(u.text for u in middle).split() == long.split()


def test_navigation_and_lookup():
    src = "# A\n\nP one. P two.\n\nP three.\n\n# B\n\nP four."
    plan = build_plan(parse(src))
    speaks = [u.speak for u in plan]
    assert speaks == ["A.", "P one.", "P two.", "P three.", "B.", "P four."]
    assert plan.next_paragraph(1) == 3 and plan.next_paragraph(2) == 3
    assert plan.previous_paragraph(3) == 1 and plan.previous_paragraph(0) is None
    assert plan.next_heading(1) == 4 and plan.next_heading(4) is None
    assert plan.previous_heading(3) == 0 and plan.previous_heading(0) is None
    assert plan.next_sentence(1) == 2 and plan.previous_sentence(2) == 1
    assert plan.at_offset(src.index("two")).index == 2
    assert plan.at_offset(src.index("\n\nP three")).index == 3
    assert plan.at_offset(len(src) + 5) is None


def test_footnote_read_at_end_of_citing_section():
    src = "# A\n\nCites[^n].\n\nMore.\n\n# B\n\nOther.\n\n[^n]: The note."
    plan = build_plan(parse(src))
    assert [u.speak for u in plan] == [
        "A.",
        "Cites.",
        "More.",
        "Footnote n: The note.",
        "B.",
        "Other.",
    ]
    note = plan[3]
    assert note.section == 1 and note.text.endswith("The note.")


def test_front_matter_pronunciations_and_global_layer():
    from vvreader.text.normalize import PronunciationDictionary

    src = "---\npronounce:\n  Smaug: smowg\n---\nSmaug met Bilbo."
    glob = PronunciationDictionary({"Bilbo": "bill bow", "Smaug": "smog"})
    assert [u.speak for u in build_plan(parse(src), dictionary=glob)] == ["smowg met bill bow."]


def test_escapes_and_rich_markup_not_interpreted():
    src = "Alert \x1b[31mred\x1b[0m and [bold]x[/bold] here."
    (u,) = build_plan(parse(src))
    assert u.speak == "Alert red and bold x bold here."
    assert u.text == src


def test_single_100k_line_plans_quickly():
    line = ("word " * 20_000).strip()
    t = time.perf_counter()
    plan = build_plan(parse(line))
    assert time.perf_counter() - t < 5
    assert len({u.sentence for u in plan}) == 1 and len(plan) > 300
    assert all(len(u.text) <= 300 for u in plan)
    assert plan[0].start == 0 and plan[-1].end == len(line)


def test_empty_document():
    assert len(build_plan(parse(""))) == 0
