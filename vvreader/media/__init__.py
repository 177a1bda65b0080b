"""Media keys and desktop media widgets: the reader as a media player of the platform (MPRIS
on Linux, Now Playing on macOS), translating their buttons into the reader's own commands
and showing what is read."""
