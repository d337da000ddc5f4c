"""``python -m xvrcore ...``: the same command line as the ``xvrcore`` script."""

import sys

from .app.cli import main

sys.exit(main())
