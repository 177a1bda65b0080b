"""A speech plan rendered to audio files: the synthesis pipeline and the file formats.

``render`` is the pipeline (``outline``, ``synthesis``, ``store``, ``encoding``,
``subtitles``, ``naming`` its parts); ``formats`` the file formats. ``errors`` holds the
errors both sides raise, so that neither imports the other for them.
"""

from vvreader.export.errors import ExportError, ExportStopped
from vvreader.export.render import ExportResult, Progress, export
from vvreader.export.subtitles import Cue

__all__ = ["Cue", "ExportError", "ExportResult", "ExportStopped", "Progress", "export"]
