"""Build a small multi-speaker singing-ish corpus from the real voices Debian ships.

    python data/demo_corpus.py /tmp/svc_demo/raw                 # 4 speakers x 24 clips
    python data/demo_corpus.py OUT --per-speaker 6 --speakers awb,slt

Needs flite, festival (+ festvox-kallpc16k, festvox-us-slt-hts) and sox (`make demo-tools`
installs them). The voices were built from recordings of real speakers: flite's awb
(Scottish male), rms (US male), slt (US female) and kal (US male), plus festival's kal
diphone voice and the slt HTS voice, which go into the kal and slt folders. About half of
the clips are made sung-like with sox: slowed, then a melody of held notes joined by short
glides (``bend``) with a light vibrato, or a whole-clip pitch shift. Rates (8, 16, 22.05,
32, 44.1 kHz), channel counts and formats (wav, flac) are mixed on purpose: the corpus
builder resamples and downmixes. The layout is ``OUT/<speaker>/<speaker>_NN.{wav,flac}``.

The output is deterministic (fixed seed, sox ``-R``) and takes a few seconds. Files are
written under temporary names and renamed, so an interrupted run leaves no half-written
clip, and a re-run skips clips that already exist.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import wave

# Lines to speak or "sing": short, varied in length, vowel-rich. Written for this corpus.
SENTENCES = [
    "Over the hills the morning bells are ringing.",
    "Sing me a song of the river and the sea.",
    "The lantern glows beside the quiet harbour.",
    "Roll along, roll along, the wagon wheels are turning.",
    "Autumn leaves are falling on the garden wall.",
    "I will wait for you beneath the silver moon.",
    "Blue birds are calling from the willow tree.",
    "Dancing in the meadow until the sun goes down.",
    "Far away a lonely whistle echoes through the valley.",
    "Hold my hand and we will walk along the shore.",
    "The winter wind is singing through the pines.",
    "Light a candle in the window, I am coming home.",
    "Every little star is shining just for you.",
    "Row the boat across the water, slow and steady.",
    "Golden fields are waving in the summer air.",
    "Hear the drum and hear the fiddle play.",
    "Only a memory remains of the old town square.",
    "Raindrops on the roof are keeping time tonight.",
    "Follow the road that leads over the mountain.",
    "The children laugh and the music carries on.",
    "Open the door and let the morning in.",
    "My heart is light as a feather on the breeze.",
    "Down by the station the evening train is leaving.",
    "Carry me over the ocean to the island.",
    "A gentle lullaby to send you off to sleep.",
    "The old clock chimes another hour away.",
    "Whistle a tune as you wander through the wood.",
    "Yellow roses bloom along the garden path.",
    "Tomorrow we will sail beyond the sunset.",
    "Never let the melody fade from your memory.",
    "Up on the rooftop the pigeons are cooing.",
    "Bring the harvest in before the storm arrives.",
    "Listen to the echo of the canyon walls.",
    "The fire is warm and the night is long.",
    "Sweet is the sound of a voice that you love.",
    "Spinning and spinning, the carousel goes round.",
    "Paper boats are drifting down the stream.",
    "Swing low, the evening is calling us home.",
    "Wake up, wake up, the sky is turning blue.",
    "The fisherman mends his nets at dawn.",
    "We shall gather by the river when the day is done.",
    "Morning glory climbing up the fence.",
    "High above the city the kites are flying.",
    "Count the waves that break upon the sand.",
    "A song for the road and a song for the rain.",
    "Hush now, the owls are watching over you.",
    "Bright are the colours of the travelling fair.",
    "The miller grinds the corn beside the stream.",
]

# speaker -> (engine, voice) choices; festival voices join the speaker they were recorded from.
SPEAKERS = {
    "awb": [("flite", "awb")],
    "kal": [("flite", "kal16"), ("flite", "kal"), ("festival", "(voice_kal_diphone)")],
    "rms": [("flite", "rms")],
    "slt": [("flite", "slt"), ("festival", "(voice_cmu_us_slt_arctic_hts)")],
}

FESTIVAL_VOICES = {"(voice_kal_diphone)": "festvox-kallpc16k",
                   "(voice_cmu_us_slt_arctic_hts)": "festvox-us-slt-hts"}
APT_PACKAGES = "flite festival festvox-kallpc16k festvox-us-slt-hts sox"
MAJOR_SCALE = [0, 2, 4, 5, 7, 9, 11, 12]


def check_tools(engines: set[str]) -> None:
    """One clear error if a tool the corpus needs is missing."""
    need = {"sox": "sox"}
    if "flite" in engines:
        need["flite"] = "flite"
    if "festival" in engines:
        need["text2wave"] = "festival"
    missing = [tool for tool in need if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"the demo corpus needs {', '.join(missing)} on PATH; install them with "
            f"`apt-get install -y {APT_PACKAGES}` (or `make demo-tools`)")


def _run(cmd: list[str], stdin: bytes | None = None) -> None:
    proc = subprocess.run(cmd, input=stdin, capture_output=True)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed: {err[-1] if err else proc.returncode}")


def _duration(path: str) -> float:
    with wave.open(path, "rb") as w:
        return w.getnframes() / float(w.getframerate())


def _melody_bends(rng: random.Random, seconds: float) -> list[str]:
    """sox ``bend`` arguments for a melody of held notes with glides and a light vibrato.

    Each bend is ``delay,cents,duration`` with the delay counted from the end of the
    previous bend; the pitch starts at the speaking pitch and moves along a major scale.
    """
    n_notes = max(2, min(6, int(seconds / 0.45)))
    start = rng.randrange(0, 3)
    notes = [MAJOR_SCALE[min(len(MAJOR_SCALE) - 1, max(0, start + rng.randint(-2, 3)))]
             for _ in range(n_notes)]
    note_len = seconds / n_notes
    glide = min(0.08, note_len / 4)
    args, t_end, prev = [], 0.0, 0
    for i, note in enumerate(notes):
        t0 = i * note_len
        cents = (note - prev) * 100
        if cents:
            args.append(f"{max(0.0, t0 - t_end):.3f},{cents},{glide:.3f}")
            t_end = max(t_end, t0) + glide
        prev = note
        # vibrato on notes long enough to hold: +/- 35 cents at about 5.5 Hz
        hold_end = (i + 1) * note_len - glide
        depth, period = 35, 0.09
        sign = 1
        if hold_end - t_end > 4 * period:
            args.append(f"{period:.3f},{depth},{period:.3f}")
            t_end += 2 * period
            while hold_end - t_end > 3 * period:
                sign = -sign
                args.append(f"0,{2 * depth * sign},{period:.3f}")
                t_end += period
            args.append(f"0,{-depth * sign},{period:.3f}")
            t_end += period
    return args


def _make_clip(speaker: str, index: int, out_dir: str, seed: int) -> str:
    """Synthesise, effect and write one clip; returns its path (skips existing files)."""
    rng = random.Random(f"{seed}:{speaker}:{index}")
    engine, voice = rng.choice(SPEAKERS[speaker])
    text = SENTENCES[(index * 7 + sum(map(ord, speaker))) % len(SENTENCES)]
    style = index % 4  # 0 speech, 1 melody, 2 pitch-shifted melody, 3 shifted speech
    ext = "flac" if index % 5 == 3 else "wav"
    path = os.path.join(out_dir, speaker, f"{speaker}_{index:02d}.{ext}")
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw.wav")
        if engine == "flite":
            _run(["flite", "-voice", voice, "-t", text, "-o", raw])
        else:
            _run(["text2wave", "-eval", voice, "-o", raw], stdin=text.encode())
            if not os.path.exists(raw):  # festival exits 0 when a voice is not installed
                raise RuntimeError(f"festival voice {voice} is not installed; install it with "
                                   f"`apt-get install -y {FESTIVAL_VOICES[voice]}`")
        effects: list[str] = []
        rate = None
        if style in (1, 2):
            tempo = rng.choice([0.75, 0.8, 0.85])
            effects += ["tempo", "-s", f"{tempo}"]
            seconds = _duration(raw) / tempo
            effects += ["bend", "-f", "50", "-o", "16", *_melody_bends(rng, seconds)]
            rate = rng.choice([44100, 22050])
        if style in (2, 3):
            effects += ["pitch", str(rng.choice([-300, -200, 200, 300, 400, 500]))]
        channels = ["channels", "2"] if index % 6 == 5 else []
        if rate:
            effects += ["rate", "-v", str(rate)]
        effects += ["vol", f"{rng.uniform(0.3, 0.9):.2f}"]
        tmp_out = os.path.join(tmp, f"out.{ext}")
        _run(["sox", "-R", raw, "-b", "16", tmp_out, *effects, *channels])
        shutil.move(tmp_out, path + ".part")
        os.replace(path + ".part", path)
    return path


def build_demo_corpus(out_dir: str, speakers: list[str] | None = None, per_speaker: int = 24,
                      seed: int = 0, workers: int | None = None) -> list[str]:
    """Write the corpus under ``out_dir``; returns the clip paths (sorted)."""
    speakers = list(speakers or SPEAKERS)
    unknown = [s for s in speakers if s not in SPEAKERS]
    if unknown:
        raise ValueError(f"unknown demo speaker(s) {', '.join(unknown)}; known: "
                         f"{', '.join(SPEAKERS)}")
    if per_speaker < 1:
        raise ValueError(f"per_speaker must be at least 1, got {per_speaker}")
    check_tools({engine for s in speakers for engine, _ in SPEAKERS[s]})
    jobs = [(s, i) for s in speakers for i in range(per_speaker)]
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        paths = list(pool.map(lambda job: _make_clip(job[0], job[1], out_dir, seed), jobs))
    return sorted(paths)


def corpus_digest(paths: list[str]) -> str:
    """SHA-1 over the clips' bytes (to check that two builds are identical)."""
    h = hashlib.sha1()
    for p in sorted(paths):
        h.update(os.path.basename(p).encode())
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output folder (OUT/<speaker>/*.wav)")
    parser.add_argument("--speakers", default=",".join(SPEAKERS),
                        help=f"comma-separated subset of {', '.join(SPEAKERS)}")
    parser.add_argument("--per-speaker", type=int, default=24, help="clips per speaker")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        paths = build_demo_corpus(args.out, args.speakers.split(","), args.per_speaker, args.seed)
    except (RuntimeError, ValueError) as e:
        print(f"demo_corpus: error: {e}", file=sys.stderr)
        return 1
    seconds = sum(_soxi_seconds(p) for p in paths)
    print(f"wrote {len(paths)} clips ({seconds:.0f} s of audio) under {args.out}")
    return 0


def _soxi_seconds(path: str) -> float:
    out = subprocess.run(["soxi", "-D", path], capture_output=True, text=True)
    try:
        return float(out.stdout.strip())
    except ValueError:
        return 0.0


if __name__ == "__main__":
    sys.exit(main())
