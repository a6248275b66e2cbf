"""svcjax.pipeline: slicing, padding, batching, reassembly, speakers, options, files.

The conversion plumbing is checked with an identity "model" (the generator returns the input
audio it was given), so every sample that comes out can be predicted exactly; the real
components run end to end in tests/test_convert_cli.py.
"""

import json
import types

import numpy as np
import pytest

from svcjax import pipeline
from svcjax.audio import io

SR = 44100


class IdentitySovits:
    """Stand-in generator: 'units' carry the audio; infer gives it back (times a gain)."""

    sampling_rate, hop = SR, 512

    def __init__(self, speakers=("alto", "tenor", "bass"), gain=None):
        self.speakers = {s: i for i, s in enumerate(speakers)}
        self.n_speakers = len(speakers)
        self.config = types.SimpleNamespace(data={"unit_interpolate_mode": "nearest"},
                                            model={"speech_encoder": "vec768l12"})
        self.module = types.SimpleNamespace(vol_embedding=False,
                                            use_automatic_f0_prediction=True)
        self.gain = gain
        self.calls = []

    def speaker_index(self, s):
        if isinstance(s, str):
            if s not in self.speakers:
                raise ValueError(f"speaker {s!r} not in model; known: {', '.join(self.speakers)}")
            return self.speakers[s]
        return int(s)

    def infer(self, units, f0, uv, speaker=0, vol=None, noise_scale=0.4, predict_f0=False,
              rng=None, lengths=None):
        self.calls.append(dict(shape=units.shape, speaker=speaker, lengths=np.array(lengths),
                               f0=np.array(f0)))
        b, t, _ = units.shape
        wav = units.reshape(b, t * 512).copy()
        if self.gain is not None:   # per-frame gain from the speaker weights of row/frame
            w = np.asarray(speaker, np.float32)
            wav *= np.repeat(w[..., 0], 512, axis=1)
        for i, n in enumerate(lengths):
            wav[i, n * 512:] = 0
        return wav, f0


def identity_converter(**kw):
    sov = IdentitySovits(**kw)
    conv = pipeline.Converter(sov, encoder=object(),
                              f0_fn=lambda a, sr, m, lens: (np.full(a.shape[:1] + (a.shape[1] // 512,), 220.0),
                                                            np.ones((a.shape[0], a.shape[1] // 512))))

    def units(audio, lens, frames, t):   # the audio itself, 512 samples a frame
        return audio[:, :t * 512].reshape(audio.shape[0], t, 512)

    conv._units = units
    return conv, sov


def _voiced(n, seed):
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(np.arange(n) * 0.05) * (1 + 0.1 * rng.standard_normal(n))
            ).astype(np.float32)


def _with_silence(seed=0):
    a, b = _voiced(3 * SR, seed), _voiced(int(2.5 * SR), seed + 1)
    return np.concatenate([np.zeros(SR // 2, np.float32), a, np.zeros(SR, np.float32), b,
                           np.zeros(SR // 3, np.float32)])


def test_identity_model_gives_the_input_back_from_many_files_in_few_batches():
    conv, sov = identity_converter()
    x1, x2, x3 = _with_silence(0), _voiced(SR + 123, 5), _voiced(7 * SR, 6)
    outs = conv.convert([x1, x2, x3], pipeline.ConvertOptions(speaker="tenor"), progress=False)
    for x, y in zip((x1, x2, x3), outs):
        # every sample back in place: pieces are padded to whole frames, not truncated
        np.testing.assert_array_equal(y, x)
    # 4 pieces (2 from x1) in at most 3 length buckets; batch rows are powers of two
    assert len(sov.calls) <= 3
    assert all((c["shape"][0] & (c["shape"][0] - 1)) == 0 for c in sov.calls)
    assert all(list(c["speaker"]) == [1] * c["shape"][0] for c in sov.calls)


def test_clip_and_crossfade_reassemble_exactly_and_transpose_scales_f0():
    conv, sov = identity_converter()
    x = _voiced(5 * SR, 9)
    opt = pipeline.ConvertOptions(speaker="alto", clip_seconds=1.3, crossfade_seconds=0.2,
                                  pad_seconds=0.3, transpose=12)
    (y,) = conv.convert([x], opt, progress=False)
    assert y.shape == x.shape
    # pieces of 1.3 s overlap by 0.2 s; identical content crossfades to itself
    np.testing.assert_allclose(y, x, atol=1e-6)
    assert np.allclose(sov.calls[0]["f0"][sov.calls[0]["lengths"] > 0][:, :5], 440.0)
    assert sum(c["shape"][0] for c in sov.calls) >= 4


def test_speaker_mix_tracks_and_fixed_mixes(tmp_path):
    conv, sov = identity_converter(gain=True)
    x = _voiced(4 * SR, 3)
    mix = {"alto": [[0, 1, 1.0, 0.0]], "tenor": [[0, 1, 0.0, 1.0]]}   # alto fades out
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(mix))
    spk = pipeline.parse_speaker(str(path))
    (y,) = conv.convert([x], pipeline.ConvertOptions(speaker=spk, pad_seconds=0.0),
                        progress=False)
    w = sov.calls[0]["speaker"][0, :, 0]              # alto's weight per frame
    assert w[0] > 0.99 and w[-1] < 0.01 and np.all(np.diff(w) <= 1e-6)
    ratio = y[SR:SR + 100] / x[SR:SR + 100]
    assert np.allclose(ratio, ratio.mean(), atol=0.01) and 0.7 < ratio.mean() < 0.8

    ref_py = tmp_path / "spkmix.py"
    ref_py.write_text("# tracks\nspk_mix_map = {\n 0: [[0., 0.5, 1, 0.5], [0.5, 1, 0.5, 1]],\n"
                      " 1: [[0., 1., 0., 0.]]\n}\n")
    m = pipeline.load_speaker_mix(ref_py)
    assert set(m.tracks) == {0, 1}
    assert pipeline.parse_speaker("alto:1,tenor:3") == {"alto": 0.25, "tenor": 0.75}
    assert pipeline.parse_speaker("tenor") == "tenor" and pipeline.parse_speaker("2") == 2
    for bad in ({"alto": [[0, 0.5, 1, 1]]}, {"alto": [[0, 0.5, 1, 1], [0.6, 1, 1, 1]]},
                {"alto": [[0, 1, -1, 1]]}):
        with pytest.raises(ValueError, match="alto"):
            pipeline.SpeakerMix(bad)


def test_unknown_speaker_and_bad_options_are_clear_errors():
    conv, _ = identity_converter()
    x = _voiced(SR, 1)
    with pytest.raises(ValueError, match="'bob' not in model; known: alto, tenor, bass"):
        conv.convert([x], pipeline.ConvertOptions(speaker="bob"))
    with pytest.raises(ValueError, match="choose one with --speaker"):
        conv.convert([x], pipeline.ConvertOptions())
    with pytest.raises(ValueError, match="crossfade"):
        conv.convert([x], pipeline.ConvertOptions(speaker=0, crossfade_seconds=0.1))
    with pytest.raises(ValueError, match="loudness_mix"):
        conv.convert([x], pipeline.ConvertOptions(speaker=0, loudness_mix=2.0))
    with pytest.raises(ValueError, match="only_diffusion needs"):
        conv.convert([x], pipeline.ConvertOptions(speaker=0, only_diffusion=True))
    with pytest.raises(ValueError, match="NAME:weight"):
        pipeline.parse_speaker("alto:x")


def test_convert_files_skips_bad_inputs_and_writes_atomically(tmp_path):
    conv, _ = identity_converter()
    good = tmp_path / "good.flac"
    io.save_audio(good, _voiced(SR, 2), SR)
    silent = tmp_path / "silent.wav"
    io.save_audio(silent, np.zeros(SR, np.float32), SR)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF....WAVEjunk")
    outs = [str(tmp_path / "out" / f"{n}.wav") for n in ("good", "silent", "corrupt")]
    msgs = []
    written, failed = pipeline.convert_files(conv, [str(good), str(silent), str(corrupt)], outs,
                                             pipeline.ConvertOptions(speaker=0),
                                             progress=False, log=msgs.append)
    assert written == outs[:1] and len(failed) == 2
    assert "silent" in failed[0] and "corrupt" in failed[1]
    y, sr = io.load_audio(outs[0])
    assert sr == SR and len(y) == SR
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.wav"]   # no temp left


def test_output_paths():
    assert pipeline._output_paths(["a/x.wav"], "o.flac", None) == ["o.flac"]
    assert pipeline._output_paths(["a/x.wav", "b/y.mp3"], "out", "flac") == \
        ["out/x.flac", "out/y.flac"]
    with pytest.raises(ValueError, match="same file"):
        pipeline._output_paths(["a/x.wav", "b/x.wav"], "out", None)
    with pytest.raises(ValueError, match="directory"):
        pipeline._output_paths(["a.wav", "b.wav"], "o.wav", None)
    with pytest.raises(ValueError, match=r"\.wav/\.flac"):
        pipeline._output_paths(["a.wav"], "o.mp3", None)
