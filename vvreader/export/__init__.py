"""A speech plan rendered to audio files: the synthesis pipeline and the file formats."""

from vvreader.export.render import Cue, ExportError, Progress, export, to_pcm16, write_vtt

__all__ = ["Cue", "ExportError", "Progress", "export", "to_pcm16", "write_vtt"]
