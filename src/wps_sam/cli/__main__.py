"""``python -m wps_sam.cli`` (torchrun launches training this way)."""

import sys

from . import main

sys.exit(main())
