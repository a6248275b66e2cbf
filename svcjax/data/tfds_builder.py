"""TFDS builder for the svcjax training corpus, ``svc_corpus`` (ArrayRecord files, no TensorFlow
needed).

The builder only declares the features and writes the examples that
:mod:`svcjax.data.corpus` has prepared: :func:`svcjax.data.corpus.build_corpus` constructs it
with a ``HostPlan`` (this host's files, the feature cache, speakers, feature shapes, and the
examples of each split). It ships inside the package, so an installed svcjax builds corpora
without a checkout; ``tfds build`` cannot build it (the plan comes from ``svcjax
build-corpus``), and reading a built corpus needs no builder class
(``tfds.builder_from_directory``). Per example:

* ``audio``: int16 waveform at 44.1 kHz, ``512 * T`` samples (divide by 32768);
* the featurizer's per-frame arrays (``units``, ``f0``, ``uv``, ``volume``, ``mel``,
  ``aug_mel``, ``aug_vol``; ``T`` frames) and ``aug_keyshift``;
* ``speaker``: class label (ids in sorted folder-name order; names in ``speaker.labels.txt``
  and ``metadata.json``), ``source``: ``"<speaker>/<file>#<slice>"``.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds


class Builder(tfds.core.GeneratorBasedBuilder):
    """svcjax training corpus: audio, content units, F0, volume, mels, key-shift augmentation."""

    name = "svc_corpus"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def __init__(self, *, plan=None, **kwargs):
        if plan is None:
            raise ValueError(
                "the svc_corpus dataset is built with `svcjax build-corpus ROOT --out DATA_DIR`;"
                " read a built one with tfds.builder_from_directory(DATA_DIR/svc_corpus/1.0.0)")
        self._plan = plan
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        plan = self._plan
        features = {
            "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
            "speaker": tfds.features.ClassLabel(names=list(plan.speakers)),
            "source": tfds.features.Text(),
        }
        for name, spec in plan.spec.items():
            if spec.shape == ():
                features[name] = tfds.features.Scalar(dtype=spec.dtype)
            else:
                features[name] = tfds.features.Tensor(shape=tuple(spec.shape), dtype=spec.dtype)
        return self.dataset_info_from_configs(
            description=__doc__.split("\n\n")[0],
            features=tfds.features.FeaturesDict(features),
            metadata=tfds.core.MetadataDict(plan.metadata),
            homepage="https://github.com/svc-develop-team/so-vits-svc",
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split) for split in self._plan.splits}

    def _generate_examples(self, split):
        yield from self._plan.examples(split)
