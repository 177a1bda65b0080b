"""Narration: reading a speech plan aloud ahead of the playhead.

:mod:`.narrator` is the controller the app talks to; :mod:`.commands` and :mod:`.events` are
what goes in and what comes out; :mod:`.synthesis` is its thread; :mod:`.lookahead` decides
when audio may stream and how long listening takes; :mod:`.audio_cache` keeps what was
said."""
