"""Run one parity case of ../shared/parity and compare it with the official numbers.

``python -m engine.parity FIXTURE --out DIR [--model DIR] [--voice FILE] [--teacher-force]
[--batch N]`` runs the case (noise injected from ``FIXTURE/noise.npy``), writes
latents.npy, audio.npy, eos_probs.npy, the other traced arrays and result.json into DIR,
and, when ``FIXTURE/expected`` exists, prints the comparison with the case's tolerances
(exit status 1 if any array is out of tolerance). With ``--batch N`` the case's utterance
is generated in one batch (engine/batch.py) with N - 1 others of other lengths, voices,
CFG scales and seeds, which join and leave around it (:func:`batch_companions`); the
outputs written are the case's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx
import numpy as np

from engine.batch import BatchGenerator, BatchItem
from engine.dpm_solver import make_schedule
from engine.errors import EngineError
from engine.generate import Frame, FrameHooks, FrameKernels, generate_frames, seeded_noise
from engine.model import VibeVoiceRealtime
from engine.sampler import sample_latent
from engine.switches import Switches

if TYPE_CHECKING:
    from engine.voices import VoicePrompt

COMPARED = (
    "latents",
    "audio",
    "cond_pos",
    "cond_neg",
    "eos_probs",
    "lm_window0",
    "tts_window0",
    "frame0_x",
    "frame0_head_out",
)
PER_FRAME = {"latents", "audio", "cond_pos", "cond_neg"}


@dataclass
class Check:
    name: str
    error: float
    """max |port - expected| / max |expected| (element-wise relative for eos_probs);
    for per-frame arrays, the worst ratio of frame error to frame tolerance times rtol."""
    rtol: float
    ok: bool


class TeacherForcing(FrameHooks):
    """Hooks of the generation loop that feed ``latents`` (frames, latent dim) back, and
    decode them, instead of the sampled ones: each frame then shows one frame's error
    against the run that made them."""

    def __init__(self, latents: np.ndarray | None) -> None:
        self.latents = latents

    def teacher(self, frame: int) -> mx.array | None:
        if self.latents is None:
            return None
        # numpy checks this index (IndexError past the teacher's frames).
        return mx.array(self.latents[frame][None])


class ParityTrace(TeacherForcing):
    """The generation loop's hooks for a parity run: records the intermediates the
    fixtures compare, teacher-forced when given ``teacher`` latents."""

    def __init__(self, teacher: np.ndarray | None = None) -> None:
        super().__init__(teacher)
        self.cond_pos: list[np.ndarray] = []
        self.cond_neg: list[np.ndarray] = []
        self.eos_logits: list[float] = []
        self.lm_window0: np.ndarray | None = None
        self.tts_window0: np.ndarray | None = None

    def window(self, index: int, h_text: mx.array, h_tts: mx.array) -> None:
        if index == 0:
            self.lm_window0 = _numpy(h_text[0])
            self.tts_window0 = _numpy(h_tts[0])

    def conditions(self, frame: int, pos: mx.array, neg: mx.array) -> None:
        self.cond_pos.append(_numpy(pos[0]))
        self.cond_neg.append(_numpy(neg[0]))

    def eos(self, frame: int, logit: float) -> None:
        self.eos_logits.append(logit)


def _numpy(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32))


def solver_steps(
    model: VibeVoiceRealtime,
    steps: int,
    noise: mx.array,
    pos: np.ndarray,
    neg: np.ndarray,
    cfg_scale: float,
) -> list[tuple[mx.array, mx.array]]:
    """The DPM solver's steps of one frame, (x fed to the head, raw head output (2,
    latent)) each, from its noise and its conditions (hidden,). The sampler is a pure
    function of them: the loop runs it as one compiled graph, this step by step."""
    schedule = make_schedule(steps, model.config.diffusion.ddpm_num_steps)
    recorded: list[tuple[mx.array, mx.array]] = []
    head = model.model.prediction_head
    cond = mx.array(pos[None]), mx.array(neg[None])
    sample_latent(head, schedule, noise, *cond, cfg_scale, recorded)
    return recorded


def find_voice(fixture: Path, case: dict) -> Path:
    for name in ("voice.safetensors", "voice.pt"):
        if (fixture / name).is_file():
            return fixture / name
    ref = fixture.parent.parent / "reference-voices" / case["voice"]
    if ref.is_file():
        return ref
    raise EngineError(f"{fixture}: no voice file; pass --voice")


def _shorter_prompt(voice: VoicePrompt, cut: int) -> VoicePrompt:
    """``voice``'s prompt without its last ``cut`` text-LM and TTS-LM positions (at least
    one left): another voice prompt of the same model, of other lengths."""

    def head(arrays: list[mx.array], length: int) -> list[mx.array]:
        return [a[:, :, :length] for a in arrays]

    lm = max(1, voice.lm_length - cut)
    tts = max(1, voice.tts_length - cut)
    return dataclasses.replace(
        voice,
        lm_keys=head(voice.lm_keys, lm),
        lm_values=head(voice.lm_values, lm),
        tts_keys=head(voice.tts_keys, tts),
        tts_values=head(voice.tts_values, tts),
        lm_hidden=voice.lm_hidden[:, :lm],
        tts_hidden=voice.tts_hidden[:, :tts],
    )


def batch_companions(
    model: VibeVoiceRealtime, fixture: Path, case: dict, voice: VoicePrompt, count: int
) -> list[BatchItem]:
    """``count`` utterances to generate beside the case's: companion k speaks the case's
    text rotated and cut or lengthened (so its text windows end at other frames), with
    another voice (another reference voice that fits the model, else the case's prompt
    cut short), CFG scale ``case + 0.4 k``, seed k and a frame limit shorter (odd k: it
    leaves the batch first) or longer (even k) than the case's."""
    from engine.voices import load_voice

    others: list[VoicePrompt] = []
    refs = fixture.parent.parent / "reference-voices"
    for path in sorted(refs.glob("*.pt")) if refs.is_dir() else []:
        if path.name == case["voice"]:
            continue
        try:
            v = load_voice(path)
            cfg = model.config
            v.validate(cfg.lm_layers, cfg.tts_layers, cfg.decoder.kv_heads,
                       cfg.decoder.dim_per_head, cfg.decoder.hidden_size)  # fmt: skip
        except EngineError:
            continue
        others.append(v)
    ids = list(case["text_ids"])
    items = []
    for k in range(1, count + 1):
        text = ids[k % len(ids) :] + ids[: k % len(ids)]
        text = text[: max(1, len(ids) - 3 * k)] if k % 2 else text + ids[: 3 * k]
        limit = case["max_frames"] + (3 * k if k % 2 == 0 else -min(4, case["max_frames"] - 1))
        items.append(
            BatchItem(
                key=f"companion {k}",
                voice=others[(k - 1) % len(others)] if others else _shorter_prompt(voice, k),
                text_ids=text,
                cfg_scale=case["cfg_scale"] + 0.4 * k,
                noise=seeded_noise(k, model.config.acoustic_vae_dim),
                max_frames=limit,
            )
        )
    return items


def _generate_in_batch(
    model: VibeVoiceRealtime,
    kernels: FrameKernels,
    item: BatchItem,
    companions: list[BatchItem],
) -> list[Frame]:
    """``item``'s frames, generated in one batch with ``companions``: the first starts a
    frame before it, so that it joins a running batch; the others join one a frame
    after it. Every utterance runs to its end."""
    batch = BatchGenerator(model, kernels.steps, kernels)
    waiting = [*companions[:1], item, *companions[1:]]
    frames: list[Frame] = []
    while True:
        if waiting:
            batch.add(waiting.pop(0))
        elif not len(batch):
            return frames
        frames += [f for key, f in batch.step() if key == item.key]


def run_case(
    fixture: Path,
    out: Path,
    model_dir: Path | None = None,
    voice_path: Path | None = None,
    teacher_force: bool = False,
    batch: int = 1,
) -> dict:
    """Run the case and write its arrays into ``out``; returns result.json's content.
    With ``batch`` > 1, the case's utterance is one of a batch of that many
    (:func:`batch_companions`)."""
    from engine.voices import load_voice
    from engine.weights import load_model

    case = json.loads((fixture / "case.json").read_text())
    model_dir = model_dir or fixture / "model"
    if not any(model_dir.glob("model*.safetensors")):
        raise EngineError(
            f"{model_dir}: no weights; generate them with `python make_weights.py {fixture} "
            "--out DIR/model.safetensors`, copy config.json beside, and pass --model DIR"
        )
    model = load_model(model_dir, dtype=mx.float32)
    voice = load_voice(voice_path or find_voice(fixture, case))
    noise = np.load(fixture / "noise.npy").astype(np.float32)
    teacher = None
    if teacher_force:
        teacher = np.load(fixture / "expected" / "latents.npy").astype(np.float32)
    trace = ParityTrace(teacher)
    # The MLX frame functions (the reference on every device), each frame's EOS read
    # before its audio is handed out.
    switches = dataclasses.replace(Switches.from_environ(), cuda_kernels=False)
    kernels = FrameKernels(model, case["steps"], switches)
    if batch > 1:
        item = BatchItem(
            key="case",
            voice=voice,
            text_ids=case["text_ids"],
            cfg_scale=case["cfg_scale"],
            noise=lambda i: mx.array(noise[i][None]),
            max_frames=case["max_frames"],
            hooks=trace,
        )
        companions = batch_companions(model, fixture, case, voice, batch - 1)
        frames = _generate_in_batch(model, kernels, item, companions)
    else:
        frames = list(
            generate_frames(
                model,
                voice,
                case["text_ids"],
                cfg_scale=case["cfg_scale"],
                steps=case["steps"],
                noise=lambda i: mx.array(noise[i][None]),
                max_frames=case["max_frames"],
                kernels=kernels,
                early_first=False,
                hooks=trace,
            )
        )
    first = mx.array(noise[0][None]), trace.cond_pos[0], trace.cond_neg[0]
    frame0_steps = solver_steps(model, case["steps"], *first, case["cfg_scale"])
    out.mkdir(parents=True, exist_ok=True)
    arrays = {
        "latents": np.stack([f.latent for f in frames]),
        "audio": np.concatenate([f.audio for f in frames]),
        "eos_probs": np.array([f.eos_prob for f in frames], dtype=np.float32),
        "eos_logits": np.array(trace.eos_logits, dtype=np.float32),
        # The loop may have started one frame past the last (EOS is read a frame late).
        "cond_pos": np.stack(trace.cond_pos[: len(frames)]),
        "cond_neg": np.stack(trace.cond_neg[: len(frames)]),
        "frame0_x": np.concatenate(
            [np.array(x.astype(mx.float32)) for x, _ in frame0_steps] + [frames[0].latent[None]]
        ),
        "frame0_head_out": np.stack([np.array(v.astype(mx.float32)) for _, v in frame0_steps]),
    }
    if trace.lm_window0 is not None:
        arrays["lm_window0"] = trace.lm_window0
        arrays["tts_window0"] = trace.tts_window0
    for name, a in arrays.items():
        np.save(out / f"{name}.npy", a.astype(np.float32))
    last = frames[-1]
    result = {
        "n_frames": len(frames),
        "stopped_by_eos": last.stop_reason == "eos",
        "eos_frame": last.index if last.stop_reason == "eos" else None,
        "teacher_forced": teacher_force,
        "batch": batch,
    }
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def compare(fixture: Path, out: Path, teacher_force: bool = False) -> list[Check]:
    """Compare ``out`` with ``fixture/expected`` using the fixture's recommended tolerances."""
    exp_dir = fixture / "expected"
    ref = json.loads((exp_dir / "result.json").read_text())
    got_result = json.loads((out / "result.json").read_text())
    hop = json.loads((fixture / "case.json").read_text())["hop"]
    if teacher_force:
        per_frame = None
        rtol = ref.get("recommended_rtol_teacher_forced", 1e-4)
    else:
        per_frame = ref.get("recommended_rtol_per_frame")
        rtol = ref["recommended_rtol"]
    checks = [
        Check(
            "n_frames",
            abs(got_result["n_frames"] - ref["n_frames"]),
            0,
            got_result["n_frames"] == ref["n_frames"],
        ),
        Check("eos_frame", 0.0, 0, got_result.get("eos_frame") == ref.get("eos_frame")),
    ]
    for name in COMPARED:
        if not (exp_dir / f"{name}.npy").is_file() or not (out / f"{name}.npy").is_file():
            continue
        exp = np.load(exp_dir / f"{name}.npy").astype(np.float64)
        got = np.load(out / f"{name}.npy").astype(np.float64)
        if exp.shape != got.shape:
            checks.append(Check(f"{name} shape {got.shape} != {exp.shape}", np.inf, rtol, False))
            continue
        if name == "eos_probs":
            err = float(np.max(np.abs(got - exp) / np.maximum(np.abs(exp), 1e-30)))
            checks.append(Check(name, err, rtol, err <= rtol))
        elif per_frame is not None and name in PER_FRAME:
            frames = exp.reshape(len(per_frame), -1) if name != "audio" else exp.reshape(-1, hop)
            gframes = got.reshape(frames.shape)
            ratios = [
                float(np.max(np.abs(g - e)) / max(np.max(np.abs(e)), 1e-30)) / tol
                for g, e, tol in zip(gframes, frames, per_frame, strict=True)
            ]
            worst = max(ratios)
            checks.append(Check(f"{name} (per frame)", worst * rtol, rtol, worst <= 1.0))
        else:
            err = float(np.max(np.abs(got - exp)) / max(np.max(np.abs(exp)), 1e-30))
            checks.append(Check(name, err, rtol, err <= rtol))
    return checks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.parity", description=__doc__.split("\n")[0])
    ap.add_argument("fixture", type=Path, help="a parity case folder")
    ap.add_argument("--out", type=Path, required=True, help="folder for the outputs")
    ap.add_argument("--model", type=Path, help="model folder (default FIXTURE/model)")
    ap.add_argument("--voice", type=Path, help="voice file (default: the fixture's)")
    ap.add_argument(
        "--teacher-force",
        action="store_true",
        help="feed the expected latents back instead of the sampled ones",
    )
    ap.add_argument(
        "--batch",
        type=int,
        default=1,
        metavar="N",
        help="generate the case in one batch with N - 1 other utterances (default 1: alone)",
    )
    a = ap.parse_args(argv)
    if a.batch < 1:
        print(f"error: --batch takes a number of utterances >= 1, not {a.batch}", file=sys.stderr)
        return 2
    try:
        result = run_case(a.fixture, a.out, a.model, a.voice, a.teacher_force, a.batch)
    except (EngineError, OSError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"{a.fixture.name}: {result['n_frames']} frames, stopped_by_eos={result['stopped_by_eos']}"
    )
    if not (a.fixture / "expected" / "result.json").is_file():
        return 0
    checks = compare(a.fixture, a.out, a.teacher_force)
    for c in checks:
        print(f"  {'ok  ' if c.ok else 'FAIL'} {c.name:28s} {c.error:.3e}  (tol {c.rtol:.0e})")
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
