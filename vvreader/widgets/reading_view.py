"""ReadingView: the document as wrapped lines (Line API) with utterance highlights."""

from __future__ import annotations

from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from vvreader.text.plan import SpeechPlan
from vvreader.text.unsafe import safe_text
from vvreader.widgets.wrap import Line, WrapModel, col_at_cell

__all__ = ["ReadingView"]

Cells = dict[int, tuple[int, int]]
_MARK_CLASS = {"code": "inline-code"}


class ReadingView(ScrollView, can_focus=True):
    """Shows a document; highlights the audible utterance and, fainter, the cursor."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "reading-view--audible",
        "reading-view--word",
        "reading-view--cursor",
        "reading-view--heading",
        "reading-view--code",
        "reading-view--quote",
        "reading-view--decoration",
        "reading-view--strong",
        "reading-view--em",
        "reading-view--inline-code",
        "reading-view--strike",
        "reading-view--link",
    }
    DEFAULT_CSS = """
    ReadingView {
        overflow-y: scroll;
        overflow-x: hidden;
        background: $surface;
        color: $foreground;
    }
    ReadingView > .reading-view--audible { background: $reading-highlight; }
    ReadingView > .reading-view--word { text-style: bold underline; }
    ReadingView > .reading-view--cursor { background: $reading-cursor; }
    ReadingView > .reading-view--heading { color: $accent; text-style: bold; }
    ReadingView > .reading-view--code { color: $secondary; }
    ReadingView > .reading-view--quote { text-style: italic; }
    ReadingView > .reading-view--decoration { color: $foreground-muted; }
    ReadingView > .reading-view--strong { text-style: bold; }
    ReadingView > .reading-view--em { text-style: italic; }
    ReadingView > .reading-view--inline-code { color: $secondary; }
    ReadingView > .reading-view--strike { text-style: strike; }
    ReadingView > .reading-view--link { color: $primary; text-style: underline; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "j,down",
            "cursor_down",
            "Cursor down",
            id="cursor-down",
            tooltip="Move the cursor to the next utterance (playback goes on).",
        ),
        Binding(
            "k,up",
            "cursor_up",
            "Cursor up",
            id="cursor-up",
            tooltip="Move the cursor to the previous utterance (playback goes on).",
        ),
    ]

    class UtteranceClicked(Message):
        """An utterance was clicked."""

        def __init__(self, index: int) -> None:
            self.index = index
            """Index of the clicked utterance in the plan."""
            super().__init__()

    cursor: reactive[int] = reactive(0, init=False)
    """Utterance under the cursor (a browsing position, independent of playback)."""
    audible: reactive[int | None] = reactive[int | None](None, init=False)
    """Utterance being heard, or None."""
    word: reactive[tuple[int, int] | None] = reactive[tuple[int, int] | None](None, init=False)
    """The word being heard (start and end offsets in the text; approximate), or None."""
    follow: reactive[bool] = reactive(True, init=False)
    """Keep the audible utterance in view; scrolling by hand turns it off."""

    def __init__(self, plan: SpeechPlan, *, name: str | None = None, id: str | None = None) -> None:
        super().__init__(name=name, id=id)
        self.plan = plan
        """The speech plan (its document is what is shown)."""
        self.model: WrapModel | None = None
        """The wrap model for the current width (None before the first layout)."""
        self._safe = safe_text(plan.document.text)
        self._cells: dict[str, Cells] = {"audible": {}, "cursor": {}, "word": {}}
        self._cache: LRUCache[tuple[object, ...], Strip] = LRUCache(1024)

    # -- wrapping -------------------------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        """Rewrap when the width changes, keeping the top line's text in view."""
        width = max(8, self.scrollable_content_region.width - 1)
        if self.model is not None and self.model.width == width:
            return
        top = None
        if self.model is not None:
            top = self.model.nearest_offset(round(self.scroll_y), 0)
        self.model = WrapModel(self.plan.document, width, self._safe)
        self._cache.clear()
        self.virtual_size = Size(width, len(self.model))
        self._update_cells("audible")
        self._update_cells("cursor")
        self._update_cells("word")
        if top is not None:
            self.scroll_to(y=self.model.offset_to_cell(top)[0], animate=False, immediate=True)
        elif self.follow and self.audible is not None:
            self.reveal(self.audible)
        self.refresh()

    def on_mount(self) -> None:
        self.set_interval(0.05, self._settle)

    def set_plan(self, plan: SpeechPlan) -> None:
        """Show a longer version of the same document (more blocks parsed), keeping what
        is on screen where it is."""
        self.plan = plan
        model = self.model
        if model is None:
            return
        top = model.nearest_offset(round(self.scroll_y), 0) if self.scroll_y else None
        try:
            model.extend(plan.document)
        except ValueError:
            self.model = WrapModel(plan.document, model.width, self._safe)
            self._cache.clear()
        self.virtual_size = Size(self.model.width, len(self.model))
        self._update_cells("audible")
        self._update_cells("cursor")
        self._update_cells("word")
        if top is not None:
            self.scroll_to(y=self.model.offset_to_cell(top)[0], animate=False, immediate=True)
        self.refresh()

    def _settle(self) -> None:
        """Wrap more of the document in the background of the UI (a slice a tick); keep
        the view steady when heights above it become exact, and repaint only when what
        is on screen changed."""
        model = self.model
        if model is None or model.complete:
            return
        height = self.scrollable_content_region.height
        top_line = round(self.scroll_y)
        first_shown = model.block_of_line(top_line)
        last_shown = model.block_of_line(top_line + height)
        top = model.nearest_offset(top_line, 0) if top_line else None
        before = model.settled
        version = model.version
        model.settle(0.015)
        if model.version == version:
            return
        self.virtual_size = Size(model.width, len(model))
        if before > last_shown:  # all below the screen: only the scrollbar changes
            return
        self._update_cells("audible")
        self._update_cells("cursor")
        self._update_cells("word")
        if top is not None and before <= first_shown:
            self.scroll_to(y=model.offset_to_cell(top)[0], animate=False, immediate=True)
        self.refresh()

    def _span(self, index: int | None) -> Cells:
        if self.model is None or index is None or not 0 <= index < len(self.plan):
            return {}
        u = self.plan[index]
        return self.model.span_cells(u.start, u.end)

    def _word_span(self) -> Cells:
        if self.model is None or self.word is None:
            return {}
        return self.model.span_cells(*self.word)

    def _update_cells(self, which: str) -> None:
        """Recompute a highlight's cells and refresh only the lines it leaves and enters."""
        old = self._cells[which]
        if which == "word":
            new = self._word_span()
        else:
            new = self._span(self.cursor if which == "cursor" else self.audible)
        self._cells[which] = new
        for line in old.keys() | new.keys():
            self.refresh_line(line)

    def reveal(self, index: int) -> bool:
        """Scroll so utterance ``index`` is visible; True if it scrolled."""
        lines = self._span(index)
        if not lines:
            return False
        top, bottom = min(lines), max(lines)
        height = self.scrollable_content_region.height
        if top >= self.scroll_y and bottom < self.scroll_y + height:
            return False
        self.scroll_to(y=max(0, top - height // 3), animate=False, immediate=True)
        return True

    # -- reactives ------------------------------------------------------------------------

    def validate_cursor(self, cursor: int) -> int:
        return max(0, min(cursor, len(self.plan) - 1))

    def watch_cursor(self) -> None:
        self._update_cells("cursor")
        if self.reveal(self.cursor):
            self.follow = False

    def watch_audible(self) -> None:
        self._update_cells("audible")
        if self.follow and self.audible is not None:
            self.reveal(self.audible)

    def watch_word(self) -> None:
        self._update_cells("word")

    def watch_follow(self, follow: bool) -> None:
        if follow and self.audible is not None:
            self.reveal(self.audible)

    # -- actions and input ----------------------------------------------------------------

    def action_cursor_down(self) -> None:
        """Move the cursor to the next utterance."""
        self.cursor += 1

    def action_cursor_up(self) -> None:
        """Move the cursor to the previous utterance."""
        self.cursor -= 1

    def _scrolled_by_hand(self) -> None:
        self.follow = False

    def action_page_down(self) -> None:
        self._scrolled_by_hand()
        super().action_page_down()

    def action_page_up(self) -> None:
        self._scrolled_by_hand()
        super().action_page_up()

    def action_scroll_home(self) -> None:
        self._scrolled_by_hand()
        super().action_scroll_home()

    def action_scroll_end(self) -> None:
        self._scrolled_by_hand()
        super().action_scroll_end()

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        self._scrolled_by_hand()

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._scrolled_by_hand()

    def utterance_at(self, x: int, y: int) -> int | None:
        """Index of the utterance drawn at content cell (x, y), if any."""
        if self.model is None:
            return None
        line = y + round(self.scroll_y)
        if not 0 <= line < len(self.model):
            return None
        col = col_at_cell(self.model.line(line).text, x + round(self.scroll_x))
        offset = self.model.nearest_offset(line, col)
        u = self.plan.at_offset(offset) if offset is not None else None
        return u.index if u is not None else None

    def on_click(self, event: events.Click) -> None:
        """Post ``UtteranceClicked`` for the sentence under the pointer."""
        offset = event.get_content_offset(self)
        if offset is None:
            return
        index = self.utterance_at(offset.x, offset.y)
        if index is not None:
            self.post_message(self.UtteranceClicked(index))

    # -- rendering ------------------------------------------------------------------------

    def notify_style_update(self) -> None:
        self._cache.clear()
        super().notify_style_update()

    def render_line(self, y: int) -> Strip:
        """One screen line: plain-text segments, styled by kind and highlights."""
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        index = scroll_y + y
        if self.model is None or index >= len(self.model):
            return Strip.blank(width, self.rich_style)
        audible = self._cells["audible"].get(index)
        cursor = self._cells["cursor"].get(index)
        word = self._cells["word"].get(index)
        line = self.model.line(index)
        key = (id(line), audible, cursor, word)  # lines live as long as the model
        strip = self._cache.get(key)
        if strip is None:
            strip = self._build(line, audible, cursor, word)
            self._cache[key] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, self.rich_style)

    def _build(
        self,
        line: Line,
        audible: tuple[int, int] | None,
        cursor: tuple[int, int] | None,
        word: tuple[int, int] | None = None,
    ) -> Strip:
        style = self.get_component_rich_style
        base = self.rich_style
        if line.style in ("heading", "code", "quote"):
            base = base + style(f"reading-view--{line.style}")
        deco = base + style("reading-view--decoration")
        cur = style("reading-view--cursor")
        aud = style("reading-view--audible")
        spoken = style("reading-view--word")
        cuts = {0, line.prefix, len(line.text)}
        for span in (audible, cursor, word):
            if span:
                cuts.update(span)
        for a, b, _ in line.marks:
            cuts.update((a, b))
        points = sorted(c for c in cuts if 0 <= c <= len(line.text))
        segments = []
        for a, b in zip(points, points[1:], strict=False):
            s: Style = deco if b <= line.prefix else base
            for ma, mb, mark in line.marks:
                if ma <= a < mb:
                    for name in mark.split():
                        s = s + style(f"reading-view--{_MARK_CLASS.get(name, name)}")
            if cursor and cursor[0] <= a < cursor[1]:
                s = s + cur
            if audible and audible[0] <= a < audible[1]:
                s = s + aud
            if word and word[0] <= a < word[1]:
                s = s + spoken
            segments.append(Segment(line.text[a:b], s))
        return Strip(segments)
