"""The training data both tasks read from a corpus built by ``svcjax build-corpus``: the input
pipeline's config from a training config, the speaker check run before step 1, the record
count that sizes an epoch, and the fixed validation batch (:mod:`svcjax.data.input_pipeline`
does the reading)."""

from __future__ import annotations

import logging

from svcjax.train.task import TrainData, note

__all__ = ["pipeline_config", "check_speakers", "num_records", "val_batch", "train_data"]


def pipeline_config(config, kind: str, tcfg):
    """The input pipeline's config: its defaults, overridden by same-named ``config.data``
    fields; the batch size is ``train.batch_size`` and the seed ``config.seed``."""
    from svcjax.data import input_pipeline

    icfg = input_pipeline.default_config(kind)
    data = config.get("data") or {}
    for k in icfg.keys():
        if k in data and k != "kind":
            icfg[k] = data[k]
    icfg.batch_size = int(tcfg.batch_size)
    seed = config.get("seed", None)
    if seed is not None:
        icfg.seed = int(seed)
    return icfg


def check_speakers(config, icfg, n_model: int, field: str) -> None:
    """Stop before step 1 when the corpus's speakers are not the config's ``spk`` map
    (:func:`svcjax.data.input_pipeline.check_speakers`); note config speakers without clips."""
    from svcjax.data import input_pipeline

    if not icfg.data_dir:
        return  # make_loader says what is missing
    spk = config.get("spk") or {}
    spk = spk.to_dict() if hasattr(spk, "to_dict") else dict(spk)
    for msg in input_pipeline.check_speakers(spk, icfg.data_dir, n_model, field):
        note(f"warning: {msg}", logging.WARNING)


def num_records(icfg) -> int:
    """Clips in the pipeline's split (one epoch)."""
    from svcjax.data import input_pipeline

    return len(input_pipeline.data_source(icfg.data_dir, icfg.split))


def val_batch(icfg, n: int = 2):
    """The first ``n`` validation clips (every process the same), or None without a split."""
    from svcjax.data import input_pipeline

    v = icfg.copy_and_resolve_references()
    v.update(split="validation", crop="start", shuffle=False, num_epochs=1,
             drop_remainder=False, batch_size=n, worker_count=0, vol_aug=False, aug_prob=0.0)
    try:
        loader = input_pipeline.make_loader(v, process_index=0, process_count=1)
    except ValueError as e:
        note(f"no validation summaries ({e})")
        return None
    return next(iter(loader), None)


def train_data(icfg, mesh) -> TrainData:
    """The training batches of ``icfg`` assembled into global arrays over ``mesh``, with the
    epoch size and the validation batch."""
    from svcjax.data import input_pipeline

    loader = input_pipeline.make_loader(icfg)
    batches = input_pipeline.GlobalBatches(loader, mesh, int(icfg.prefetch))
    return TrainData(batches, num_records(icfg), val_batch(icfg))
