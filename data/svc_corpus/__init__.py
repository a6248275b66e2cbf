"""svc_corpus: the svcjax training corpus as a TFDS (ArrayRecord) dataset.

Built with ``svcjax build-corpus ROOT --out DATA_DIR`` (see svcjax/data/corpus.py); read with
``svcjax.data.input_pipeline`` or ``tfds.builder_from_directory(DATA_DIR/svc_corpus/1.0.0)``.
"""
