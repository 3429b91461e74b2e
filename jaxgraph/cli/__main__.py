"""``python -m jaxgraph.cli ...``: the ``jaxgraph`` command without the console script."""

import sys

from . import main

sys.exit(main())
