"""``python -m polymodal`` (and ``torchrun -m polymodal train CONFIG``) runs the command line."""

import sys

from polymodal.cli import main

sys.exit(main())
