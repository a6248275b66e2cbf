"""Audio front-end speed, side by side with the PyTorch reference, and resampling quality.

    python bench/audio_frontend.py --ref .ref/so-vits-svc [--batch 8 --seconds 10]

Times each svcjax function (jit-compiled, warmed up; median of --repeats) on a (B, L) batch
of 44.1 kHz audio built from the committed voice clips, and the reference's function on the
same batch (torch on CPU, or librosa/SciPy where the reference uses them), printing seconds
and the ratio reference / svcjax (> 1: svcjax is faster). Then prints the SNR of svcjax's
resampler against soxr (librosa's default) on the real clips. Never asserts anything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from svcjax.audio import features, resample, spectrogram  # noqa: E402
from tests.audio import cases  # noqa: E402


def timeit(fn, repeats):
    fn()  # warm-up / compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def batch_audio(batch, seconds):
    clips = []
    for name in cases.voice_names():
        y, sr = cases.voice(name)
        clips.append(resample.resample_host(y, sr, 44100))
    y = np.concatenate(clips)
    n = int(seconds * 44100)
    y = np.tile(y, n // len(y) + 2)
    return np.stack([y[i * 997:i * 997 + n] for i in range(batch)]).astype(np.float32)


def snr_db(x, ref):
    n = min(len(x), len(ref))
    return 10 * np.log10(np.sum(ref[:n] ** 2) / np.sum((x[:n] - ref[:n]) ** 2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default=None, help="So-VITS-SVC checkout (reference timings)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    x = batch_audio(args.batch, args.seconds)
    xj = jax.device_put(x)
    print(f"batch {x.shape} (44.1 kHz), device {jax.devices()[0].platform}, "
          f"median of {args.repeats}")

    ours = {
        "linear_spectrogram": lambda: spectrogram.linear_spectrogram(xj),
        "mel_spectrogram (80)": lambda: spectrogram.mel_spectrogram(xj),
        "vocoder_mel (128)": lambda: spectrogram.vocoder_mel(xj),
        "vocoder_mel keyshift=3.0": lambda: spectrogram.vocoder_mel(xj, keyshift=3.0),
        "vocoder_mel keyshift array": lambda: spectrogram.vocoder_mel(
            xj, keyshift=jnp.linspace(-5, 5, args.batch)),
        "volume": lambda: features.volume(xj),
        "resample 44.1k->16k": lambda: resample.resample(xj, 44100, 16000),
        "resample 32k->44.1k": lambda: resample.resample(xj, 32000, 44100),
    }
    theirs = {}
    x16 = np.stack([resample.resample_host(r, 44100, 16000) for r in x])
    x32 = np.stack([resample.resample_host(r, 44100, 32000) for r in x])
    ours["resample 32k->44.1k"] = lambda: resample.resample(jax.device_put(x32), 32000, 44100)
    import librosa

    theirs["resample 44.1k->16k"] = ("librosa soxr_hq", lambda: [
        librosa.resample(r, orig_sr=44100, target_sr=16000) for r in x])
    theirs["resample 32k->44.1k"] = ("librosa soxr_hq", lambda: [
        librosa.resample(r, orig_sr=32000, target_sr=44100) for r in x32])
    if args.ref:
        import torch

        os.environ["SVCJAX_REF"] = args.ref
        mp = cases.load_reference("modules/mel_processing.py", args.ref)
        nv = cases.load_reference("vdecoder/nsf_hifigan/nvSTFT.py", args.ref)
        utils = cases.load_reference("utils.py", args.ref)
        xt = torch.from_numpy(x)
        stft = nv.STFT(44100, 128, 2048, 2048, 512, 40, 16000)
        vol = utils.Volume_Extractor(512)
        keys = np.linspace(-5, 5, args.batch)
        theirs.update({
            "linear_spectrogram": ("spectrogram_torch", lambda: mp.spectrogram_torch(
                xt, 2048, 44100, 512, 2048)),
            "mel_spectrogram (80)": ("mel_spectrogram_torch", lambda: mp.mel_spectrogram_torch(
                xt, 2048, 80, 44100, 512, 2048, 0.0, 22050.0)),
            "vocoder_mel (128)": ("STFT.get_mel", lambda: stft.get_mel(xt)),
            "vocoder_mel keyshift=3.0": ("STFT.get_mel", lambda: stft.get_mel(xt, keyshift=3.0)),
            "vocoder_mel keyshift array": ("get_mel per row", lambda: [
                stft.get_mel(xt[i:i + 1], keyshift=float(k)) for i, k in enumerate(keys)]),
            # Volume_Extractor returns row 0 only; loop over the rows as the reference must
            "volume": ("Volume_Extractor per row", lambda: [
                vol.extract(xt[i:i + 1]) for i in range(len(xt))]),
        })

    print(f"{'function':30s} {'svcjax s':>10s} {'reference s':>12s} {'ratio':>7s}  reference")
    for name, fn in ours.items():
        t_ours = timeit(fn, args.repeats)
        if name in theirs:
            label, ref_fn = theirs[name]
            t_ref = timeit(ref_fn, args.repeats)
            print(f"{name:30s} {t_ours:10.4f} {t_ref:12.4f} {t_ref / t_ours:7.2f}  {label}")
        else:
            print(f"{name:30s} {t_ours:10.4f} {'-':>12s} {'-':>7s}")

    print("\nresampling quality: SNR (dB) of svcjax presets against librosa soxr_hq")
    for name, target in [("kal_16k.wav", 44100), ("hts_32k.wav", 44100),
                         ("rms_22k_stereo.wav", 44100), ("slt_up5_44k.wav", 16000)]:
        y, sr = cases.voice(name)
        ref = librosa.resample(y, orig_sr=sr, target_sr=target, res_type="soxr_hq")
        vhq = librosa.resample(y, orig_sr=sr, target_sr=target, res_type="soxr_vhq")
        row = [f"{name} {sr}->{target}:", f"soxr_vhq {snr_db(vhq, ref):.1f}"]
        for q in resample.PRESETS:
            row.append(f"{q} {snr_db(np.asarray(resample.resample(y, sr, target, quality=q)), ref):.1f}")
        print("  " + ", ".join(row))


if __name__ == "__main__":
    main()
