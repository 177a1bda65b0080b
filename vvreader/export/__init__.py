"""A speech plan rendered to audio files: the synthesis pipeline and the file formats.

``errors`` holds the one error type both sides raise, so that neither imports the other
for it.
"""

from vvreader.export.errors import ExportError
from vvreader.export.render import Cue, Progress, export, to_pcm16, write_vtt

__all__ = ["Cue", "ExportError", "Progress", "export", "to_pcm16", "write_vtt"]
