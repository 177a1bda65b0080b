"""Speech normalisation and the pronunciation dictionary."""

from __future__ import annotations

import pytest

from vvreader.text.normalize import PronunciationDictionary, normalize, strip_controls


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("Mr. Smith met Dr. Jones.", "Mister Smith met Doctor Jones."),
        ("Bring fruit, e.g. apples, etc.", "Bring fruit, for example apples, et cetera"),
        ("See p. 12 and Fig. 3.", "See page 12 and figure 3."),
        ("It is 5 km away and weighs 10kg.", "It is 5 kilometers away and weighs 10 kilograms."),
        ("A 1 GB disk at 3.5 GHz.", "A 1 gigabyte disk at 3.5 gigahertz."),
        ("It was 20 °C today.", "It was 20 degrees Celsius today."),
        ("Pay $12.50 or $3 million.", "Pay 12 dollars 50 or 3 million dollars."),
        ("Growth of 15% this year.", "Growth of 15 percent this year."),
        ("Visit https://www.example.org/a/b?c=1 now.", "Visit example dot org now."),
        ("Mail jane.doe@example.com today.", "Mail jane dot doe at example dot com today."),
        ("Tom & Jerry", "Tom and Jerry"),
        ("Wait—what?", "Wait, what?"),
        ("Pages 3–5 only.", "Pages 3 to 5 only."),
        ("At 5 p.m. we left.", "At 5 p m we left."),
        ("[bold red]x[/]", "bold red x"),
        ("I have 5 m of rope in the van.", "I have 5 m of rope in the van."),
        ("“Quoted” and ‘single’.", "\"Quoted\" and 'single'."),
    ],
)
def test_normalize(text, spoken):
    assert normalize(text) == spoken


def test_controls_and_escapes_removed():
    text = "red \x1b[31mALERT\x1b[0m \x9b2J done\x07 \u202eevil\x1b]0;title\x07"
    out = normalize(text)
    assert "\x1b" not in out and "\x9b" not in out and "\u202e" not in out and "\x07" not in out
    assert out == "red ALERT 2J done evil"
    assert strip_controls("a\x00b\x7fc") == "abc"


def test_dictionary_whole_word_and_smart_case():
    d = PronunciationDictionary({"feat": "feet", "Nice": "niece"})
    assert d.apply("A feat, not defeat or feats. FEAT!") == "A feet, not defeat or feats. feet!"
    # An entry with a capital only matches that spelling.
    assert d.apply("Nice is nice.") == "niece is nice."


def test_dictionary_layers_and_order():
    base = PronunciationDictionary({"tomato": "tomahto", "read": "red"})
    doc = PronunciationDictionary({"tomato": "tomayto"})
    merged = base.layered(doc)
    assert merged.apply("read the tomato") == "red the tomayto"
    # The dictionary runs last, after abbreviations were expanded.
    assert normalize("Mr. Tomato", PronunciationDictionary({"Mister": "Mista"})) == "Mista Tomato"


def test_dictionary_from_file_and_front_matter(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("# comment\nHermione = her my oh nee\nnginx = engine x  # web\n", "utf-8")
    d = PronunciationDictionary.from_file(path)
    assert d.apply("Hermione runs nginx") == "her my oh nee runs engine x"
    fm = "title: Book\npronounce:\n  Smaug: smowg\n  'Eowyn': ay oh win\nauthor: x\n"
    d = PronunciationDictionary.from_front_matter(fm)
    assert len(d) == 2 and d.apply("Smaug and Eowyn") == "smowg and ay oh win"
