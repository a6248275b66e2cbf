"""A pitch-tracking test set with exact ground truth, and the accuracy of each F0 method on it.

    python data/f0_eval_set.py                          # every method, prints the table
    python data/f0_eval_set.py --methods crepe-tiny,dio --out /tmp/f0set   # also keep the clips

Real voices (Debian's flite: slt, rms, awb, kal16) speak a sentence. WORLD (pyworld) analyses
each recording (Harvest voicing, CheapTrick spectral envelope); its voiced stretches are then
replaced by a harmonic signal whose phase follows a pitch contour we choose, sample by sample,
and whose harmonic amplitudes follow the voice's own envelope, while consonants and pauses stay
the recording's own. The contours cover 80-800 Hz: an exponential glide over the whole range,
vibrato (+-60 cents at 5.5 Hz), a melody of steps with short portamenti, and a high register
with a slow swell. So the true F0 of every voiced frame is known exactly. (Resynthesis with
WORLD's own vocoder was tried first: its output drifts from the requested F0 by tens of cents
on 10-18 % of frames, too loose to serve as ground truth.)

Metrics at So-VITS-SVC's 44.1 kHz / 512-sample frames, over frames whose voicing is certain
(the same voicing within +-15 ms):

* GPE: gross pitch error, % of the frames voiced in truth and in the tracker's output whose
  F0 is > 50 cents off;
* RMSE: cents RMS error on those frames without a gross error;
* VR / VFA: % of truly voiced frames called voiced, % of truly unvoiced frames called voiced.

Needs flite and pyworld (the ``f0`` extra). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

SR = 44100
HOP = 512
WORLD_PERIOD = 5.0  # ms

VOICES = ("slt", "rms", "awb", "kal16")
TEXTS = {
    "slt": "Sing me a song of a lass that is gone, say could that lass be I.",
    "rms": "Over the sea to the island we sail, merry of soul.",
    "awb": "Speed bonnie boat like a bird on the wing, onward the sailors cry.",
    "kal16": "Merrily we roll along, roll along, over the deep blue sea.",
}
CONTOURS = ("glide", "vibrato", "melody", "high")
METHODS = ("crepe", "crepe-tiny", "dio", "harvest", "pm", "fcpe")


def contour(kind: str, t: np.ndarray, dur: float, seed: int = 0) -> np.ndarray:
    """The chosen F0 (Hz) at times ``t`` (seconds) for a clip of ``dur`` seconds."""
    if kind == "glide":  # 80 -> 800 Hz, exponential, over the whole clip
        return 80.0 * 10.0 ** np.clip(t / dur, 0, 1)
    if kind == "vibrato":  # +-60 cents at 5.5 Hz around a voice-dependent centre
        base = (130.0, 200.0, 260.0)[seed % 3]
        return base * 2.0 ** (0.6 / 12 * np.sin(2 * np.pi * 5.5 * t))
    if kind == "melody":  # 0.25 s notes over two octaves, 30 ms portamento between them
        notes = np.array([110, 147, 196, 262, 330, 440, 587, 392, 220, 131, 175, 247], float)
        notes = np.roll(notes, seed)
        pos = t / 0.25
        i = np.floor(pos).astype(int)
        a = np.log2(notes[i % len(notes)])
        b = np.log2(notes[(i + 1) % len(notes)])
        glide = 0.03 / 0.25  # hold the note, glide into the next in its last 30 ms
        tail = np.clip((pos - i - (1 - glide)) / glide, 0, 1)
        return 2.0 ** (a + (b - a) * tail)
    if kind == "high":  # 375-667 Hz swell with a light vibrato
        return 500.0 * 2.0 ** (5 / 12 * np.sin(2 * np.pi * 0.7 * t)
                               + 0.3 / 12 * np.sin(2 * np.pi * 6.0 * t))
    raise ValueError(f"unknown contour {kind!r}; expected one of {CONTOURS}")


def _speak(voice: str, text: str, workdir: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    path = os.path.join(workdir, f"{voice}.wav")
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", path], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    x, sr = sf.read(path, dtype="float64")
    return (x.mean(axis=1) if x.ndim == 2 else x), sr


def available() -> str | None:
    """``None`` when the set can be built here, else the reason it cannot."""
    if shutil.which("flite") is None:
        return "flite is not installed (apt-get install flite)"
    try:
        import pyworld  # noqa: F401
    except ImportError as e:
        return f"pyworld is not importable ({e}); install svcjax[f0] (setuptools<81)"
    return None


def _harmonic(f0_samples: np.ndarray, sp: np.ndarray, fs_env: int, frame_times: np.ndarray,
              sr: int, max_hz: float) -> np.ndarray:
    """Sum of harmonics of ``f0_samples`` (Hz per output sample, 0 = silent) whose amplitudes
    follow the power envelope ``sp`` (WORLD frames at ``frame_times``)."""
    n = f0_samples.shape[0]
    t = np.arange(n) / sr
    phase = 2 * np.pi * np.cumsum(f0_samples) / sr
    f0_frames = np.interp(frame_times, t, f0_samples)
    bins = np.arange(sp.shape[1]) * fs_env / (2 * (sp.shape[1] - 1))
    out = np.zeros(n)
    kmax = int(max_hz // max(np.min(f0_frames[f0_frames > 0], initial=max_hz), 1.0))
    for k in range(1, kmax + 1):
        fk = k * f0_frames
        pos = np.clip(fk / bins[1], 0, sp.shape[1] - 1.001)
        i0 = pos.astype(int)
        w = pos - i0
        rows = np.arange(sp.shape[0])
        amp = np.sqrt(sp[rows, i0] * (1 - w) + sp[rows, i0 + 1] * w)
        amp = np.where((fk > 0) & (fk < max_hz), amp, 0.0)
        out += np.interp(t, frame_times, amp) * np.sin(k * phase)
    return out


def build(voices=VOICES, contours=CONTOURS, max_seconds: float | None = None) -> list[dict]:
    """Clips at 44.1 kHz with their true F0 per 512-sample frame.

    Each recording keeps its own unvoiced sounds and pauses; its voiced stretches (as Harvest
    finds them) are replaced by a harmonic signal at exactly the chosen contour whose harmonic
    amplitudes follow the voice's own spectral envelope (CheapTrick), cross-faded over 10 ms.
    Each item: ``name``, ``audio`` (float32), ``f0`` (true Hz, every frame), ``voiced`` and
    ``unvoiced`` (masks of frames whose voicing is certain: the same within +-15 ms).
    """
    import librosa
    import pyworld as pw

    why = available()
    if why:
        raise RuntimeError(f"cannot build the F0 test set: {why}")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for vi, voice in enumerate(voices):
            x, fs = _speak(voice, TEXTS[voice], tmp)
            if max_seconds is not None:
                x = x[: int(max_seconds * fs)]
            f0, tw = pw.harvest(x, fs, f0_floor=50.0, f0_ceil=800.0, frame_period=WORLD_PERIOD)
            sp = pw.cheaptrick(x, f0, tw, fs)
            orig = librosa.resample(x, orig_sr=fs, target_sr=SR, res_type="soxr_hq")
            n = orig.shape[0]
            ts = np.arange(n) / SR
            dur = n / SR
            # voicing per sample, cross-faded over 10 ms
            v = np.interp(ts, tw, (f0 > 0).astype(float))
            ramp = int(0.01 * SR)
            v = np.convolve(np.round(v), np.ones(ramp) / ramp, mode="same")
            frames = np.arange(n // HOP) * HOP / SR
            world_v = f0 > 0
            idx = np.rint(frames * 1000 / WORLD_PERIOD).astype(int)
            near = np.clip(idx[:, None] + np.arange(-3, 4)[None], 0, len(world_v) - 1)
            for kind in contours:
                target = contour(kind, ts, dur, seed=vi)
                harm = _harmonic(np.where(v > 0, target, 0.0), sp, fs, tw, SR, 0.48 * fs)
                voiced_s = v > 0.5
                scale = np.sqrt(np.mean(orig[voiced_s] ** 2) / max(np.mean(harm[voiced_s] ** 2),
                                                                   1e-20))
                y = v * harm * scale + (1 - v) * orig
                y = (0.9 * y / max(np.abs(y).max(), 1e-9)).astype(np.float32)
                out.append({
                    "name": f"{voice}-{kind}",
                    "audio": y,
                    "f0": contour(kind, frames, dur, seed=vi),
                    "voiced": world_v[near].all(axis=1),
                    "unvoiced": (~world_v[near]).all(axis=1),
                })
    return out


def cents(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = 1200 * np.abs(np.log2(a / b))
    return np.where((a > 0) & (b > 0), c, np.inf)  # a missing F0 counts as gross error


def score(clips: list[dict], f0s: list[np.ndarray], uvs: list[np.ndarray]) -> dict:
    """GPE / RMSE / VR / VFA of one method over the set (see the module docstring)."""
    err, vr, vfa = [], [], []
    for c, f0, uv in zip(clips, f0s, uvs):
        err.append(cents(f0, c["f0"])[c["voiced"] & (uv > 0)])
        vr.append(uv[c["voiced"]] > 0)
        vfa.append(uv[c["unvoiced"]] > 0)
    err, vr, vfa = np.concatenate(err), np.concatenate(vr), np.concatenate(vfa)
    fine = err[err <= 50]
    return {"gpe": 100 * float(np.mean(err > 50)),
            "rmse": float(np.sqrt(np.mean(fine ** 2))) if fine.size else float("nan"),
            "vr": 100 * float(np.mean(vr)), "vfa": 100 * float(np.mean(vfa)) if vfa.size else 0.0,
            "frames": int(err.size)}


def run(clips: list[dict], methods=METHODS, **kw) -> tuple[dict, dict, dict]:
    """Track every clip with every method: ``(scores, outputs, seconds)``."""
    from svcjax.audio.f0 import extract_f0

    scores, outputs, seconds = {}, {}, {}
    for m in methods:
        t0 = time.perf_counter()
        lengths = [c["audio"].shape[0] for c in clips]
        batch = np.zeros((len(clips), max(lengths)), np.float32)
        for i, c in enumerate(clips):
            batch[i, :lengths[i]] = c["audio"]
        f0, uv = extract_f0(batch, SR, m, lengths=lengths, **kw)  # one padded batch
        res = [(f0[i, :c["f0"].shape[0]], uv[i, :c["f0"].shape[0]]) for i, c in enumerate(clips)]
        seconds[m] = time.perf_counter() - t0
        outputs[m] = res
        scores[m] = score(clips, [r[0] for r in res], [r[1] for r in res])
    return scores, outputs, seconds


def torchfcpe_outputs(clips: list[dict], threshold: float = 0.006) -> tuple[list, float]:
    """torchfcpe's own PyTorch code (its bundled model, ``infer`` with local-argmax decoding)
    on each clip, for comparison with svcjax's ``fcpe`` row: the same 16 kHz samples svcjax
    resamples to, and the same So-VITS post-processing (nearest resize to the 44.1 kHz / 512
    frames, interpolation through unvoiced frames). torchaudio (used by torchfcpe only to
    resample, bypassed here) and local_attention (only built for local heads, never) are
    stubbed when they are not installed."""
    import types

    import torch

    try:
        import torchaudio  # noqa: F401
    except ImportError:
        ta, tt = types.ModuleType("torchaudio"), types.ModuleType("torchaudio.transforms")
        tt.Resample, ta.transforms = None, tt
        sys.modules.update({"torchaudio": ta, "torchaudio.transforms": tt})
    try:
        import local_attention  # noqa: F401
    except ImportError:
        la = types.ModuleType("local_attention")
        la.LocalAttention = None
        sys.modules["local_attention"] = la
    import torchfcpe

    from svcjax.audio import f0 as F

    model = torchfcpe.spawn_bundled_infer_model(device="cpu")
    lens = np.array([c["audio"].shape[0] for c in clips])
    batch = np.zeros((len(clips), lens.max()), np.float32)
    for i, c in enumerate(clips):
        batch[i, :lens[i]] = c["audio"]
    audio16 = F._to_16k(batch, lens, SR, "kaiser_best", ceil=True)
    t0 = time.perf_counter()
    res = []
    for c, x in zip(clips, audio16):
        with torch.no_grad():
            f0 = model.infer(torch.from_numpy(x)[None, :, None], sr=16000,
                             decoder_mode="local_argmax", threshold=threshold)[0, :, 0].numpy()
        n = c["f0"].shape[0]
        idx = F.nearest_index(f0.shape[0], n)
        out, uv = F.interpolate_f0(f0[idx])
        res.append((np.asarray(out), np.asarray(uv)))
    return res, time.perf_counter() - t0


def agreement(clips: list[dict], outputs: dict) -> dict:
    """Pairwise GPE (%) between methods on the truly voiced frames (interpolated F0)."""
    out = {}
    for a in outputs:
        for b in outputs:
            e = np.concatenate([cents(ra[0], rb[0])[c["voiced"]]
                                for c, ra, rb in zip(clips, outputs[a], outputs[b])])
            out[a, b] = 100 * float(np.mean(e > 50))
    return out


def table(scores: dict, seconds: dict | None = None) -> str:
    lines = ["| method | GPE % (>50 cents) | RMSE cents | voiced recall % | false voiced % |"
             + (" seconds |" if seconds else ""),
             "|---|---|---|---|---|" + ("---|" if seconds else "")]
    for m, s in scores.items():
        lines.append(f"| {m} | {s['gpe']:.2f} | {s['rmse']:.1f} | {s['vr']:.1f} | {s['vfa']:.1f} |"
                     + (f" {seconds[m]:.1f} |" if seconds else ""))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--voices", default=",".join(VOICES))
    ap.add_argument("--contours", default=",".join(CONTOURS))
    ap.add_argument("--out", help="also write the clips (wav) and truth (npz) here")
    ap.add_argument("--torchfcpe", action="store_true",
                    help="also score torchfcpe's own PyTorch code (row 'torchfcpe (torch)')")
    args = ap.parse_args(argv)
    why = available()
    if why:
        sys.exit(f"cannot build the F0 test set: {why}")
    clips = build(args.voices.split(","), args.contours.split(","))
    total = sum(c["audio"].shape[0] for c in clips) / SR
    print(f"{len(clips)} clips, {total:.1f} s, "
          f"{sum(int(c['voiced'].sum()) for c in clips)} truly voiced frames")
    if args.out:
        import soundfile as sf

        os.makedirs(args.out, exist_ok=True)
        for c in clips:
            sf.write(os.path.join(args.out, c["name"] + ".wav"), c["audio"], SR)
            np.savez(os.path.join(args.out, c["name"] + ".npz"), f0=c["f0"], voiced=c["voiced"],
                     unvoiced=c["unvoiced"])
    scores, outputs, seconds = run(clips, args.methods.split(","))
    if args.torchfcpe:
        name = "torchfcpe (torch)"
        outputs[name], seconds[name] = torchfcpe_outputs(clips)
        scores[name] = score(clips, [r[0] for r in outputs[name]],
                             [r[1] for r in outputs[name]])
    print(table(scores, seconds))
    agree = agreement(clips, outputs)
    names = list(outputs)
    print("\npairwise GPE % (row vs column, truly voiced frames)")
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for a in names:
        print(f"| {a} | " + " | ".join(f"{agree[a, b]:.1f}" for b in names) + " |")


if __name__ == "__main__":
    main()
