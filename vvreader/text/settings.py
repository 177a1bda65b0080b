"""PlanSettings: how a document is turned into speech (every rule configurable)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PlanSettings"]


@dataclass(frozen=True)
class PlanSettings:
    """Policies of the speech plan. Pauses are in milliseconds of silence after an utterance."""

    max_utterance_chars: int = 300
    """Sentences longer than this are split at clause boundaries (0: never split)."""
    tables: str = "rows"
    """``rows``: read row by row, each cell after its header; ``skip``: say nothing."""
    code: str = "announce"
    """``announce``: say "Code block, <language>, N lines."; ``skip``; ``read``: read it."""
    urls: str = "domain"
    """Bare URLs and autolinks: ``domain`` (say the host name) or ``skip``."""
    images: str = "alt"
    """``alt``: say the alt text; ``skip``: say nothing."""
    book_images: str = "skip"
    """Images in EPUB and HTML books (which describe nearly every picture for screens):
    ``skip``: say nothing; ``alt``: say the alt text."""
    footnotes: str = "section_end"
    """``section_end``: read footnote bodies at the end of the section that cites them;
    ``skip``: never read them."""
    heading_period: bool = True
    """Give headings and list items a full stop when they have none (it shapes prosody)."""
    normalize: bool = True
    """Rewrite symbols, units, abbreviations and URLs into words before synthesis."""
    pause_clause_ms: int = 150
    """After a piece of a sentence that was split for length."""
    pause_sentence_ms: int = 300
    """After a sentence inside a paragraph."""
    pause_list_item_ms: int = 500
    """After a list item or a table row."""
    pause_heading_ms: int = 600
    """After a heading."""
    pause_paragraph_ms: int = 800
    """After a paragraph, quote, code announcement or table."""
    pause_section_ms: int = 1400
    """After the last utterance of a section (before the next heading)."""
