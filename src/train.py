"""`accelerate launch src/train.py RECIPE.yaml [--key value ...]` — same as `thinktrain train`."""

import sys

from thinktrain.cli import train

if __name__ == "__main__":
    sys.exit(train(sys.argv[1:]))
