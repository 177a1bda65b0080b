"""Real audio without a sound card: a private PulseAudio server with a null sink, and a
recorder of that sink's monitor. Used by the end-to-end audio tests and bench/playback.py.

PortAudio (sounddevice) has no PulseAudio backend of its own here: it reaches the server
through ALSA's pulse plugin (libasound2-plugins), whose ``default`` device follows
``PULSE_SERVER`` when a server answers there. The null sink is float32, mono, 24 kHz, the
format vvreader plays, so nothing is converted and the monitor hands back the very samples
that were played.

Timing of the recording: parec delivers the monitor in small fragments (``latency_ms``),
each stamped with ``time.monotonic()`` on arrival. Sample ``k`` cannot arrive before the
sink renders it, so ``min(arrival - samples_so_far / rate)`` over all fragments is the
time of sample 0, late by at most the delivery delay of the most punctual fragment (well
under a millisecond unless the machine is loaded throughout). The null sink renders at
most one sink latency ahead of its clock; the monitor's small requested latency keeps
that to about ``latency_ms``.

What the monitor shows is exact because the null sink takes no rewinds (``norewinds``).
A sink that does rewind plays silence for a stream that has no data yet (every stream as
it starts, and one whose client was not scheduled in time) and, once data comes, rewinds
to put it where the silence was: a sound card's buffer takes the rewritten audio before
it is heard, but the null sink's monitor has already delivered that span, and the
recording loses up to a sink latency (about 9 ms) of a stream that starts with sound.
Without rewinds a stream starts at the next render, whole. A playing stream that runs
dry inside the server (its client was late; PortAudio reports an underflow too when the
ALSA pulse plugin passes the underrun on) is silent until it has data again, which the
audio tests cannot tell from the machine's delays; the server logs each such underrun (at
debug level) and :attr:`Recording.server_underruns` counts those during a recording.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 24_000
PACKAGES = {"pulseaudio": "pulseaudio", "pactl": "pulseaudio-utils", "parec": "pulseaudio-utils"}
"""Programs the server needs, and the Debian package of each (.ci/setup installs them)."""


try:  # the server dies with the process that started it, even if that one crashes
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class AudioSetupError(RuntimeError):
    """The audio test server could not be set up; the message says why."""


def ensure_installed() -> None:
    """Install the PulseAudio programs and the ALSA pulse plugin with apt if they are
    missing (as .ci/setup does); raise if that is not possible."""
    missing = sorted({pkg for prog, pkg in PACKAGES.items() if shutil.which(prog) is None})
    plugin = "alsa-lib/libasound_module_pcm_pulse.so"
    if not any(
        p
        for d in ("/usr/lib", "/usr/lib64")
        for pat in (plugin, f"*/{plugin}")
        for p in Path(d).glob(pat)
    ):
        missing.append("libasound2-plugins")
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise AudioSetupError(f"missing {', '.join(missing)} and no apt-get: install them")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    cmd = [
        *sudo,
        "apt-get",
        "-o",
        "DPkg::Lock::Timeout=300",
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        *missing,
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    )
    if done.returncode != 0:
        raise AudioSetupError(
            f"could not install {', '.join(missing)} (run bash .ci/setup): {done.stderr[-500:]}"
        )


UNDERRUN_MARKS = ("Implicit underrun of", "Actual underrun of")
"""How PulseAudio's debug log begins the line of a playing stream that ran dry."""


def disturbances(late_callbacks: int, server_underruns: int) -> list[str]:
    """What the audio chain reported of a run that the machine may have disturbed:
    PortAudio's late callbacks (the device played silence the ring never saw) and the
    server's underruns of a playing stream (see the module's docstring). Empty: neither."""
    out = []
    if late_callbacks:
        out.append(f"PortAudio reported {late_callbacks} late callbacks")
    if server_underruns:
        out.append(f"the sound server ran the stream dry {server_underruns} times")
    return out


class PulseServer:
    """``pulseaudio`` in the foreground, as the current user, in its own runtime folder:
    no default script (``-n``), a null sink ``sink`` (the default sink) and a native
    protocol socket that needs no cookie. Nothing of the user's own session is used."""

    def __init__(self, root: Path | None = None, sink: str = "vvreader_test") -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="vvreader-pulse-"))
        self.sink = sink
        self.socket = self.root / "native"
        self.server = f"unix:{self.socket}"
        """The PULSE_SERVER value for clients."""
        self.log = self.root / "pulseaudio.log"
        self._proc: subprocess.Popen | None = None

    @property
    def monitor(self) -> str:
        return f"{self.sink}.monitor"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HOME=str(self.root),
            XDG_RUNTIME_DIR=str(self.root),
            XDG_CONFIG_HOME=str(self.root / "config"),
            PULSE_SERVER=self.server,
        )
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        return env

    def pactl(self, *args: str, timeout: float = 5.0) -> str:
        done = subprocess.run(
            ["pactl", "--server", self.server, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self._env(),
        )
        if done.returncode != 0:
            raise AudioSetupError(f"pactl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def start(self, timeout: float = 15.0) -> PulseServer:
        ensure_installed()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "config").mkdir(exist_ok=True)
        cmd = [
            "pulseaudio",
            "-n",
            "--daemonize=no",
            "--system=no",
            "--use-pid-file=no",
            "--exit-idle-time=-1",
            "--disallow-exit",
            "--log-target=stderr",
            "--log-level=debug",  # the underruns of playing streams (see the module doc)
            "-L",
            f"module-null-sink sink_name={self.sink} format=float32le rate={RATE} "
            f"channels=1 norewinds=1 sink_properties=device.description=vvreader-test",
            "-L",
            f"module-native-protocol-unix socket={self.socket} auth-anonymous=1",
        ]
        with open(self.log, "wb") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=self.root,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        end = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise AudioSetupError(
                    f"pulseaudio exited ({self._proc.returncode}): "
                    f"{self.log.read_text(errors='replace')[-1500:]}"
                )
            try:
                info = self.pactl("info", timeout=2.0)
                break
            except (AudioSetupError, subprocess.TimeoutExpired):
                if time.monotonic() > end:
                    self.stop()
                    raise AudioSetupError(
                        f"pulseaudio did not answer within {timeout:.0f} s; see {self.log}"
                    ) from None
                time.sleep(0.05)
        if f"Default Sink: {self.sink}" not in info:
            self.pactl("set-default-sink", self.sink)
        return self

    def log_size(self) -> int:
        """Bytes of server log so far: where :meth:`underruns_since` starts counting."""
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def underruns_since(self, offset: int) -> int:
        """Times a playing stream ran dry inside the server since ``offset`` in its log."""
        try:
            with open(self.log, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return 0
        return sum(line.count(mark) for line in text.splitlines() for mark in UNDERRUN_MARKS)

    def crash(self) -> None:
        """Kill the server at once (SIGKILL), as a crashing sound server goes away: its
        clients' streams break. :meth:`start` brings it back on the same socket."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PulseServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def reinit_portaudio() -> None:
    """Make PortAudio (and ALSA's configuration, which decides whether ``default`` is the
    pulse plugin) look at the environment again, if sounddevice is already loaded."""
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()
        sd._initialize()


class use_server:
    """Point this process and its children at ``server`` (PULSE_SERVER), and PortAudio's
    default output at its null sink; undone on exit."""

    def __init__(self, server: PulseServer) -> None:
        self.server = server
        self._old: str | None = None

    def __enter__(self) -> PulseServer:
        self._old = os.environ.get("PULSE_SERVER")
        os.environ["PULSE_SERVER"] = self.server.server
        reinit_portaudio()
        import sounddevice as sd

        names = [d["name"] for d in sd.query_devices()]
        try:
            out = sd.query_devices(kind="output")["name"]
        except sd.PortAudioError:
            out = None
        if out not in ("default", "pulse"):
            raise AudioSetupError(
                f"PortAudio's default output is {out!r}, not the pulse plugin (devices: "
                f"{names}); is libasound2-plugins installed?"
            )
        return self.server

    def __exit__(self, *exc: object) -> None:
        if self._old is None:
            os.environ.pop("PULSE_SERVER", None)
        else:
            os.environ["PULSE_SERVER"] = self._old
        reinit_portaudio()


@dataclass
class Recording:
    samples: np.ndarray
    """float32 mono at RATE."""
    t0: float
    """``time.monotonic()`` of sample 0 (see the module's docstring)."""
    arrival_spread_ms: tuple[float, float]
    """Median and 90th percentile of the fragments' arrival lag behind ``t0``."""
    server_underruns: int = 0
    """Playing streams that ran dry inside the server meanwhile: each may have cost the
    recording a few ms of their audio (see the module's docstring)."""

    def time_of(self, sample: float) -> float:
        return self.t0 + sample / RATE


class MonitorRecorder:
    """Records the sink's monitor with ``parec`` (raw float32, mono, 24 kHz)."""

    def __init__(self, server: PulseServer, latency_ms: int = 10) -> None:
        self.server = server
        self.latency_ms = latency_ms
        self._proc: subprocess.Popen | None = None
        self._chunks: list[bytes] = []
        self._stamps: list[tuple[float, int]] = []
        self._log_from = 0
        self._thread = threading.Thread(
            target=self._read, name="vvreader-test-monitor-recorder", daemon=True
        )

    def start(self) -> MonitorRecorder:
        self._log_from = self.server.log_size()
        self._proc = subprocess.Popen(
            [
                "parec",
                "--server",
                self.server.server,
                "-d",
                self.server.monitor,
                "--raw",
                "--format=float32le",
                f"--rate={RATE}",
                "--channels=1",
                f"--latency-msec={self.latency_ms}",
                "--client-name=vvreader-test-recorder",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            env=self.server._env(),
        )
        self._thread.start()
        end = time.monotonic() + 5
        while not self._stamps:  # recording has begun
            if self._proc.poll() is not None or time.monotonic() > end:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise AudioSetupError(f"parec gave nothing: {err.strip()}")
            time.sleep(0.01)
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        total = 0
        while True:
            data = os.read(fd, 1 << 16)
            now = time.monotonic()
            if not data:
                return
            self._chunks.append(data)
            total += len(data)
            self._stamps.append((now, total // 4))

    def stop(self) -> Recording:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._thread.join(5)
        raw = b"".join(self._chunks)
        samples = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<f4").astype(np.float32)
        stamps = np.array(self._stamps, dtype=np.float64)
        lag = stamps[:, 0] - stamps[:, 1] / RATE
        t0 = float(lag.min())
        spread = np.percentile((lag - t0) * 1000, [50, 90])
        return Recording(
            samples,
            t0,
            (float(spread[0]), float(spread[1])),
            self.server.underruns_since(self._log_from),
        )
