"""``python -m losskit``: the command line (``losskit demo | explain | plot``, see :mod:`losskit.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
