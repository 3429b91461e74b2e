"""``python -m splat.cli``: the ``splat`` command."""

import sys

from . import main

sys.exit(main())
