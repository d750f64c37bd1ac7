"""`accelerate launch src/train.py RECIPE.yaml [--key value ...]` — same as `thinktrain train`."""

import sys

from thinktrain.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
