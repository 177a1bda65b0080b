"""The text pipeline: a file becomes a document of blocks, and the document a speech plan.

Data flows one way::

    files (bytes -> text) -> readers (text -> Document of Blocks) -> plan (Document -> SpeechPlan)

- ``files``: reading a file or stdin: size limit, encodings, binary files, errors.
- ``document``: the types (``Document``, ``Block``); no parsing.
- ``readers``: picks the reader of a file's type (``markdown``, ``plain``).
- ``markdown``: Markdown to blocks with markdown-it, the only Markdown authority; also the
  inline marks the reading view draws.
- ``plain``: plain text to paragraph blocks.
- ``speech``: what a block says aloud, mapped back to the source.
- ``segment``: sentences and clause-sized pieces.
- ``normalize``: symbols, units, abbreviations, URLs into words; pronunciation dictionaries.
- ``settings``: ``PlanSettings``, how a document is read.
- ``plan``: the speech plan, whole or a part at a time.
- ``unsafe``: the one table of characters unsafe on a terminal or for the voice.
"""
