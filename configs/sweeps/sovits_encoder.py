"""Ablation: the content encoder whose units condition the generator.

    svcjax sweep configs/sweeps/sovits_encoder.py:data_root=CORPORA --workdir /tmp/sweep_enc

Each run reads a corpus built with its encoder: ``CORPORA/<encoder>`` (``svcjax build-corpus
... --encoder <encoder> --out CORPORA/<encoder>``). Arguments: ``variant``, ``data_root``,
``steps`` per run.
"""

from configs.common import parse_arg

ENCODERS = {"vec768l12": 768, "vec256l9": 256, "hubertsoft": 256, "whisper-ppg": 1024,
            "wavlmbase+": 768, "cnhubertlarge": 1024, "dphubert": 768,
            "whisper-ppg-large": 1280}


def get_sweep(arg=None):
    a = parse_arg(arg, variant="full", data_root="", steps=50_000)
    runs = []
    for enc, dim in ENCODERS.items():
        over = {"model.speech_encoder": enc, "model.ssl_dim": dim}
        if a.data_root:
            over["data.data_dir"] = f"{a.data_root}/{enc}"
        runs.append({"name": enc, "overrides": over})
    return {"base": f"configs/sovits_44k.py:variant={a.variant}",
            "common": {"train.num_steps": a.steps}, "runs": runs}
