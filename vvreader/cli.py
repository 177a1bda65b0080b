"""Command line: ``vvreader FILE`` (the reader) and ``vvreader FILE --plan [--json]``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from vvreader.config import Config, load_config
from vvreader.paths import config_file, pronunciations_file
from vvreader.speed import SPEED_RANGE
from vvreader.text.document import Document
from vvreader.text.files import DocumentError
from vvreader.text.normalize import PronunciationDictionary
from vvreader.text.plan import ProgressivePlan, SpeechPlan, build_plan
from vvreader.text.readers import load_document
from vvreader.text.settings import PlanSettings
from vvreader.text.unsafe import TERMINAL_UNSAFE

if TYPE_CHECKING:
    from vvreader.export import ExportResult, Progress

__all__ = ["build_parser", "main", "escape_terminal"]


def escape_terminal(text: str) -> str:
    """Make control characters, escapes and bidi overrides visible (``\\x1b``, ``\\u202e``)."""
    return TERMINAL_UNSAFE.sub(
        lambda m: (
            f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}"
        ),
        text,
    )


def _json_line(obj: dict[str, object]) -> str:
    """One JSON object on one line; characters unsafe in a terminal are \\u-escaped."""
    line = json.dumps(obj, ensure_ascii=False)
    return TERMINAL_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", line)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (other commands add their options here)."""
    p = argparse.ArgumentParser(
        prog="vvreader",
        description="Read Markdown, text, EPUB and HTML documents aloud with a local neural voice.",
    )
    p.add_argument(
        "file", metavar="FILE", nargs="?", help="a .md, .txt, .epub or .html file, or - for stdin"
    )
    p.add_argument(
        "--version",
        action="store_true",
        help="print the version and the engine's paths in use here (BLAS, C decoder, "
        "bf16 weight copies, CUDA kernels), and exit",
    )
    p.add_argument("--plan", action="store_true", help="print the speech plan and exit")
    p.add_argument("--json", action="store_true", help="with --plan: one JSON object a line")
    p.add_argument("--encoding", help="decode FILE with this encoding instead of detecting it")
    p.add_argument(
        "--text", action="store_true", help="read FILE as plain text even if it looks like Markdown"
    )
    p.add_argument(
        "--image-alt",
        action="store_true",
        help="in EPUB and HTML books, say each image's alt text (default: images are silent)",
    )
    p.add_argument(
        "--max-chars",
        type=int,
        default=PlanSettings.max_utterance_chars,
        help="split sentences longer than this at clause boundaries (default %(default)s)",
    )
    p.add_argument(
        "--pronunciations",
        metavar="PATH",
        help="a 'word = say' pronunciation file (default: $XDG_CONFIG_HOME/vvreader/"
        "pronunciations.txt if it exists)",
    )
    engine_options(p)
    reader_options(p)
    return p


def reader_options(p: argparse.ArgumentParser) -> None:
    """Options of the reader UI and the audio output."""
    g = p.add_argument_group("reader")
    g.add_argument(
        "--audio-device",
        metavar="NAME|N|null",
        help="sound output: a device name or number from --list-devices, or null "
        "(no sound, keeps time)",
    )
    g.add_argument("--list-devices", action="store_true", help="list audio outputs and exit")
    g.add_argument(
        "--theme",
        metavar="NAME",
        help="vvreader-dark, vvreader-light, vvreader-high-contrast or any Textual "
        "theme (also from the command palette, ctrl+p)",
    )
    g.add_argument(
        "--paused",
        action="store_true",
        help="wait for space instead of reading as soon as the model is ready",
    )
    g.add_argument(
        "--config",
        metavar="PATH",
        help="settings file (default $XDG_CONFIG_HOME/vvreader/config.toml)",
    )


def engine_options(p: argparse.ArgumentParser) -> None:
    """Options that choose the model and how it speaks."""
    g = p.add_argument_group("voice")
    g.add_argument(
        "--model",
        metavar="DIR|REPO",
        help="a VibeVoice-Realtime model folder or Hugging Face repository id "
        "(default microsoft/VibeVoice-Realtime-0.5B, downloaded once)",
    )
    g.add_argument(
        "--voice",
        metavar="NAME|PATH",
        help="a voice of the model (e.g. en-Emma_woman) or a .pt/.safetensors file",
    )
    g.add_argument(
        "--cfg-scale",
        type=float,
        help="classifier-free guidance, 1.0-5.0 (default 1.5, or the config file)",
    )
    g.add_argument(
        "--steps", type=int, help="diffusion steps per frame, 1-50 (default 5, or the config file)"
    )
    g.add_argument(
        "--speed",
        type=float,
        metavar="X",
        help="listening speed, 0.5-3.0, the pitch kept (default 1.0, or the config file); "
        "also for --export",
    )
    g.add_argument(
        "--quantize",
        type=int,
        choices=(8, 4),
        metavar="8|4",
        help="quantize the language model to 8 or 4 bits when loading "
        "(less memory; a small loss of precision; for machines short of memory: on a "
        "Linux CPU it reads several times slower, its products in MLX instead of the C "
        "kernels)",
    )
    g.add_argument(
        "--list-voices",
        action="store_true",
        help="list the voices on disk and those that can be fetched, and exit",
    )
    g = p.add_argument_group("export")
    g.add_argument(
        "--export",
        metavar="OUT.m4b",
        help="render the document to an audio file and exit: .m4b, .m4a, .mp3, .opus, .ogg, "
        ".flac or .wav (by the extension), with the chapters and the book's tags; run the "
        "same command again to continue an export that stopped",
    )
    g.add_argument(
        "--split-chapters",
        action="store_true",
        help="with --export: one file per chapter, numbered, in the folder OUT names "
        "without its extension",
    )
    g.add_argument(
        "--subtitles",
        action="store_true",
        help="with --export: also write WebVTT subtitles beside each file (a WAV always has them)",
    )
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="with --export: no progress, only errors",
    )
    g.add_argument(
        "--from",
        dest="first",
        type=int,
        default=0,
        metavar="I",
        help="with --export: first utterance (index from --plan)",
    )
    g.add_argument(
        "--to", dest="last", type=int, metavar="J", help="with --export: last utterance, inclusive"
    )


def _dictionary(path: str | None) -> PronunciationDictionary | None:
    """The global pronunciation dictionary, if one is given or installed."""
    if path is None:
        default = pronunciations_file()
        if not default.is_file():
            return None
        path = str(default)
    try:
        return PronunciationDictionary.from_file(path)
    except (OSError, UnicodeDecodeError) as err:
        raise DocumentError(f"{path}: cannot read the pronunciation file ({err})") from None


def _plan(args: argparse.Namespace, config: Config) -> SpeechPlan:
    """Load the document and build its plan from the options."""
    doc = load_document(args.file, encoding=args.encoding, markdown=False if args.text else None)
    _report_source(doc)
    return build_plan(doc, _plan_settings(args, config), _dictionary(args.pronunciations))


def _progressive_plan(args: argparse.Namespace, config: Config) -> ProgressivePlan:
    """The document, to be planned a part at a time (the reader shows it at once)."""
    progress = ProgressivePlan.open(
        args.file,
        encoding=args.encoding,
        markdown=False if args.text else None,
        settings=_plan_settings(args, config),
        dictionary=_dictionary(args.pronunciations),
    )
    _report_source(progress.plan.document, book_warnings=False)  # the reader shows them
    return progress


def _plan_settings(args: argparse.Namespace, config: Config) -> PlanSettings:
    """The plan policies the options (and the settings file) choose."""
    return PlanSettings(
        max_utterance_chars=max(0, args.max_chars),
        book_images="alt" if args.image_alt or config.image_alt else "skip",
    )


def _report_source(doc: Document, book_warnings: bool = True) -> None:
    """One line on stderr for a legacy encoding and for each warning of a book."""
    if doc.book is not None:
        if book_warnings:
            for warning in doc.book.warnings:
                print(f"vvreader: warning: {escape_terminal(warning)}", file=sys.stderr)
            if doc.book.unlisted_warnings:
                print(f"vvreader: warning: and {doc.book.unlisted_warnings} more", file=sys.stderr)
    elif doc.encoding not in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
        print(f"vvreader: {doc.name}: not UTF-8; decoded as {doc.encoding}", file=sys.stderr)


def print_plan(plan: SpeechPlan, as_json: bool, out: TextIO) -> None:
    """Write the plan, one utterance a line."""
    for u in plan:
        if as_json:
            out.write(_json_line(u.as_dict()) + "\n")
        else:
            kind = "note" if u.note else u.kind  # a book's note, read only when asked for
            out.write(
                f"{u.index:>5} {kind:<9} {u.start:>7}-{u.end:<7} {u.pause_after:>5}ms  "
                f"{escape_terminal(u.speak)}\n"
            )


def run_plan(args: argparse.Namespace) -> int:
    """``--plan``: print the speech plan."""
    config, _, warnings = settings(args)
    for w in warnings:
        print(f"vvreader: {escape_terminal(w)}", file=sys.stderr)
    plan = _plan(args, config)
    print_plan(plan, args.json, sys.stdout)
    sys.stdout.flush()
    return 0


def settings(args: argparse.Namespace) -> tuple[Config, Path, list[str]]:
    """The settings in effect: command line over config file over defaults."""
    path = Path(args.config).expanduser() if args.config else config_file()
    config, warnings = load_config(path)
    given = {
        "voice": args.voice,
        "cfg_scale": args.cfg_scale,
        "steps": args.steps,
        "theme": args.theme,
        "model": args.model,
        "audio_device": args.audio_device,
        "speed": args.speed,
    }
    config = replace(config, **{k: v for k, v in given.items() if v is not None})
    if args.paused:
        config = replace(config, autoplay=False)
    if not 1.0 <= config.cfg_scale <= 5.0:
        raise DocumentError(f"--cfg-scale {config.cfg_scale:g}: give a value from 1.0 to 5.0")
    if not 1 <= config.steps <= 50:
        raise DocumentError(f"--steps {config.steps}: give a number from 1 to 50")
    if not SPEED_RANGE[0] <= config.speed <= SPEED_RANGE[1]:
        raise DocumentError(f"--speed {config.speed:g}: give a value from 0.5 to 3.0")
    return config, path, warnings


def run_list_devices(args: argparse.Namespace) -> int:
    """``--list-devices``: the audio outputs."""
    from vvreader.player import AudioDeviceError, list_devices

    try:
        print(list_devices())
    except AudioDeviceError as err:
        print(f"vvreader: {err}", file=sys.stderr)
        return 2
    return 0


def run_reader(args: argparse.Namespace) -> int:
    """The reader UI."""
    config, config_file, warnings = settings(args)
    progress = _progressive_plan(args, config)
    plan = progress.advance(1)  # the first part of a big book: milliseconds
    if not len(plan):
        print(f"vvreader: {args.file}: nothing to read", file=sys.stderr)
        return 2
    if args.file == "-" or not (sys.stdin.isatty() and sys.stdout.isatty()):
        print(
            "vvreader: the reader needs a terminal (and a file, not stdin); use --plan to "
            "print the plan or --export OUT.wav to write the audio",
            file=sys.stderr,
        )
        return 2
    from vvreader.app import ReaderApp, ReaderOptions
    from vvreader.loader import EngineLoader, EngineUnavailable, check_model
    from vvreader.paths import state_dir
    from vvreader.state import PositionStore
    from vvreader.terminal import native_stderr_to

    try:  # a mistyped folder, or nothing cached while offline: say so before the UI opens
        check_model(config.model or None)
    except EngineUnavailable as err:
        print(f"vvreader: {escape_terminal(str(err))}", file=sys.stderr)
        return 2

    options = ReaderOptions(
        config=config,
        config_file=config_file,
        document_path=None if args.file == "-" else args.file,
        model_id=config.model,
        warnings=warnings,
    )
    # The download (with progress), the weights and the warm-up happen inside the app.
    loader = EngineLoader(
        config.model or None,
        config.voice,
        quantize=args.quantize,
        cfg_scale=config.cfg_scale,
        steps=config.steps,
    )
    with native_stderr_to(state_dir() / "stderr.log"):
        app = ReaderApp(plan, options, loader, positions=PositionStore(), progress=progress)
        try:
            app.run()
        finally:
            app.shutdown()
    return app.return_code or 0


def run_export(args: argparse.Namespace) -> int:
    """``--export OUT.ext``: render the document with the engine."""
    from vvreader.export import ExportError, ExportStopped, export
    from vvreader.export.formats import check_ready, format_for
    from vvreader.loader import EngineUnavailable, open_engine

    config, _, warnings = settings(args)
    for w in warnings:
        print(f"vvreader: {escape_terminal(w)}", file=sys.stderr)
    out = Path(args.export).expanduser()
    try:  # before the model loads: an unknown extension, or ffmpeg missing
        lacking = check_ready(format_for(out))
    except ExportError as err:
        print(f"vvreader: {escape_terminal(str(err))}", file=sys.stderr)
        return 2
    if lacking:
        print(f"vvreader: warning: {escape_terminal(lacking)}", file=sys.stderr)
    plan = _plan(args, config)
    if not len(plan):
        print(f"vvreader: {args.file}: nothing to read", file=sys.stderr)
        return 2
    target = out.resolve().parent
    if not target.is_dir() or not os.access(target, os.W_OK):
        print(
            f"vvreader: {args.export}: cannot write there (no such folder, or no permission)",
            file=sys.stderr,
        )
        return 2
    try:
        engine = open_engine(
            config.model or None, quantize=args.quantize, progress_bar=_download_bar
        )
    except EngineUnavailable as err:
        print(f"vvreader: {err}", file=sys.stderr)
        return 2
    progress = ExportProgressLine(sys.stderr, quiet=args.quiet)

    from vvreader.keep_awake import KeepAwake

    try:
        with KeepAwake(why="vvreader is exporting audio"):
            result = export(
                plan,
                engine,
                out,
                voice=config.voice,
                cfg_scale=config.cfg_scale,
                steps=config.steps,
                first=args.first,
                last=args.last,
                speed=config.speed,
                split_chapters=args.split_chapters,
                subtitles=args.subtitles,
                name=args.file,
                on_progress=progress.update,
            )
    except ExportStopped as stop:
        progress.end()
        print(
            f"vvreader: export stopped; {stop.kept} utterances made are kept in "
            f"{escape_terminal(str(stop.folder))}: run the same command again to continue",
            file=sys.stderr,
        )
        return 130
    except Exception as err:  # export and engine errors: one line that says what to do
        progress.end()
        print(f"vvreader: {escape_terminal(str(err))}", file=sys.stderr)
        return 2
    finally:
        engine.close()
    progress.end()
    if not args.quiet:
        print(escape_terminal(export_summary(result, out, args.split_chapters)), file=sys.stderr)
    return 0


def export_summary(result: ExportResult, out: Path, split: bool) -> str:
    """The last line of an export: what was written, how long, how many chapters."""
    from vvreader.humanize import format_duration

    length = format_duration(result.seconds)
    chapters = len(result.chapters)
    where = (
        f"{len(result.files)} files in {result.files[0].parent}"
        if split and result.files
        else str(out)
    )
    line = f"wrote {where} ({length}, {chapters} chapter{'s' if chapters != 1 else ''})"
    if result.subtitles:
        line += " and subtitles" if split else f" and {result.subtitles[0]}"
    if result.resumed:
        line += f"; {result.resumed} utterances came from the stopped run"
    return line


class ExportProgressLine:
    """Export progress on ``stream``: on a terminal one line redrawn (a bar, at most five
    times a second); elsewhere a plain line at each chapter and every
    :attr:`PLAIN_EVERY` seconds; nothing when ``quiet``."""

    PLAIN_EVERY = 30.0
    REDRAW_EVERY = 0.2

    def __init__(self, stream: TextIO, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.terminal = stream.isatty()
        self._shown = False
        self._last = float("-inf")
        self._chapter = 0

    def update(self, p: Progress) -> None:
        """Show ``p`` (called after each utterance)."""
        from vvreader.humanize import describe_export, export_bar

        if self.quiet:
            return
        now = time.monotonic()
        last = p.done == p.total
        if self.terminal:
            if last or now - self._last >= self.REDRAW_EVERY:
                width = shutil.get_terminal_size((80, 24)).columns - 1
                self.stream.write(f"\r{export_bar(p, width)}\x1b[K")
                self.stream.flush()
                self._shown, self._last = True, now
        elif last or p.chapter_number != self._chapter or now - self._last >= self.PLAIN_EVERY:
            self.stream.write(f"vvreader: export {describe_export(p)}\n")
            self.stream.flush()
            self._last = now
        self._chapter = p.chapter_number

    def end(self) -> None:
        """End the redrawn line, so that what follows starts on a line of its own."""
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


def _download_bar(label: str) -> Callable[[int, int | None], None]:
    """A tqdm bar on stderr fed by (bytes done, bytes in all)."""
    from tqdm.auto import tqdm

    bar = tqdm(desc=label, unit="B", unit_scale=True, file=sys.stderr, leave=False)

    def update(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()

    return update


def list_voices(model: str | None) -> str:
    """What ``--list-voices`` prints: the voices on disk and those that can be fetched.

    Never downloads anything.

    Raises:
        EngineUnavailable: ``model`` is neither a model folder nor a repository id.
    """
    from engine.errors import DownloadError, EngineError
    from engine.hub import DEFAULT_MODEL, ModelSource, resolve_model
    from engine.voice_fetch import cached_voices, voice_cache_dir
    from engine.voices import VoiceCatalogue, load_catalogue
    from vvreader.loader import EngineUnavailable, preset_catalogue

    name = model or DEFAULT_MODEL
    lines = [f"voices for {name}:"]
    try:
        source: ModelSource | None = resolve_model(model or None, offline=True, tokenizer=False)
    except DownloadError:
        source = None
        lines.append("  (the model is not downloaded yet; it is fetched on the first run)")
    except EngineError as err:
        raise EngineUnavailable(str(err)) from None
    catalogue: VoiceCatalogue | None = None
    if source is None and name == DEFAULT_MODEL:
        catalogue = load_catalogue()
    if source is not None:
        for voice, path in source.voices.items():
            lines.append(f"  {'local':<7} {voice:<16} in the model folder ({path.parent})")
        try:
            catalogue = preset_catalogue(source)
        except EngineError as err:
            lines.append(f"  (cannot read the model's config.json: {err})")
    if catalogue is not None:
        cached = cached_voices()
        lines.append(
            f"  preset voices from github.com/{catalogue.repository} (MIT); 'fetch' ones are "
            f"downloaded on first use into {voice_cache_dir()}:"
        )
        for v in sorted(catalogue.voices, key=lambda v: (v.experimental, v.id)):
            status = "local" if v.id in cached else "fetch"
            note = "  experimental" if v.experimental else ""
            default = "  (default)" if v.id == catalogue.default else ""
            line = f"  {status:<7} {v.id:<16} {v.language_name:<16} {v.gender:<6}{note}{default}"
            lines.append(line.rstrip())
    elif source is not None:
        lines.append("  (the official preset voices do not fit this model's shape)")
    lines.append("  or any voice prompt file: --voice PATH.pt|PATH.safetensors")
    return "\n".join(lines)


def run_list_voices(args: argparse.Namespace) -> int:
    """``--list-voices``: print :func:`list_voices` for ``--model`` (or the config file's
    model)."""
    from vvreader.loader import EngineUnavailable

    config, _, _ = settings(args)
    try:
        print(list_voices(config.model or None))
    except EngineUnavailable as err:
        print(f"vvreader: {err}", file=sys.stderr)
        return 2
    return 0


def version_report() -> str:
    """What ``--version`` prints: vvreader's version, Python and the platform, then MLX
    and the engine's optional paths (engine.capabilities; no model is read)."""
    import platform

    from vvreader import __version__

    head = (
        f"vvreader {__version__} (Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()})"
    )
    try:
        from engine.capabilities import capabilities

        engine_lines = capabilities().lines()
    except (ImportError, OSError) as err:  # a broken or missing MLX: what the user must fix
        engine_lines = [f"MLX cannot be loaded here: {err}; reinstall vvreader (see README)"]
    return "\n".join([head, *engine_lines])


def run_version(args: argparse.Namespace) -> int:
    """``--version``: print :func:`version_report`."""
    print(version_report())
    return 0


def dispatch(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    """Pick the command for the parsed options."""
    if args.version:
        return run_version
    if args.list_devices:
        return run_list_devices
    if args.list_voices:
        return run_list_voices
    if args.plan:
        return run_plan
    if args.export:
        return run_export
    return run_reader


def _log_to_file() -> None:
    """``VVREADER_LOG=FILE``: log what is spoken and heard, with times, to FILE."""
    path = os.environ.get("VVREADER_LOG")
    if not path:
        return
    import logging

    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(created).3f %(name)s %(message)s"))
    logger = logging.getLogger("vvreader")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vvreader``; returns the exit status."""
    _log_to_file()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.json and not args.plan:
        parser.error("--json needs --plan")
    for given, name in (
        (args.split_chapters, "--split-chapters"),
        (args.subtitles, "--subtitles"),
        (args.quiet, "--quiet"),
    ):
        if given and not args.export:
            parser.error(f"{name} needs --export")
    if args.file is None and not (args.version or args.list_devices or args.list_voices):
        parser.error("give a FILE to read (or --version, --list-devices, --list-voices)")
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        return dispatch(args)(args)
    except DocumentError as err:
        print(f"vvreader: {escape_terminal(str(err))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
