"""Train the So-VITS-SVC generator or the shallow-diffusion score network.

    python train.py --config configs/sovits_44k.py --workdir /tmp/svc

Training lands with its issue (data pipeline and training at scale); until then this entry
point says so and exits.
"""

import sys


def main() -> int:
    print("train.py: training is not implemented yet (it lands with the training issue); "
          "see README.md for what runs today.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
