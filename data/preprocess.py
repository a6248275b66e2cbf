"""Build the training corpus: ``python data/preprocess.py ROOT --out DATA_DIR [options]``.

The same as ``svcjax build-corpus`` (see ``svcjax build-corpus --help`` and svcjax/data/corpus.py):
ROOT/<speaker>/*.{wav,flac,mp3,ogg} -> DATA_DIR/svc_corpus/1.0.0 (TFDS, ArrayRecord).
On a multi-host job run it on every host with ``--distributed``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from svcjax.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["build-corpus", *sys.argv[1:]]))
