"""Notes cited by a sentence: where in the plan a footnote or an EPUB note is read.

A sentence that holds a note reference (``[^label]`` in the text; a book's noterefs are
written so) can have its note read at once and then come back (the reading screen's note
key); this module finds the note's utterances. A book's notes are read only so (their
utterances are marked ``note`` and passed over in turn); a Markdown footnote is also read at
the end of its section.
"""

from __future__ import annotations

import re

from vvreader.text.plan import SpeechPlan

__all__ = ["cited_note"]

_REF = re.compile(r"\[\^([^\]\s]+)\]")


def cited_note(plan: SpeechPlan, index: int) -> range | None:
    """The utterances of the first note cited by the sentence of utterance ``index`` (all
    of its pieces, when it was split), None when it cites none or the note is not in the
    plan."""
    if not 0 <= index < len(plan):
        return None
    sentence = plan[index].sentence
    first = last = index
    while first > 0 and plan[first - 1].sentence == sentence:
        first -= 1
    while last + 1 < len(plan) and plan[last + 1].sentence == sentence:
        last += 1
    for m in _REF.finditer(plan.document.text, plan[first].start, plan[last].end):
        label = m.group(1)
        found = [v.index for v in plan if v.kind == "footnote" and plan.footnote(v.index) == label]
        if found:
            return range(found[0], found[-1] + 1)
    return None
