"""Command line: ``splat train | render | eval | demo | localize`` (see docs/training.md).

User errors (a missing or malformed file, a bad flag value, a size that cannot fit in
memory) print one line ``splat: error: ...`` and exit with status 2, as ``jaxgraph``
does; ``--out`` is created and checked writable before any work. The commands only
parse flags, call the library and print (:mod:`splat.cli.commands`).
"""

from __future__ import annotations

import sys

from ..datasets import DEMO_SCENE
from .commands import cmd_demo, cmd_eval, cmd_localize, cmd_render, cmd_train
from .parser import DEMO_OUT, build_parser

__all__ = ["main", "build_parser", "DEMO_SCENE", "DEMO_OUT"]


def main(argv=None) -> int:
    """Run the ``splat`` command line; returns the exit status (2 for user errors)."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.cmd in ("train", "demo"):
        if args.sh_degree is None:
            args.sh_degree = 1 if args.cmd == "demo" else 3
    run = {"train": cmd_train, "render": cmd_render, "eval": cmd_eval, "demo": cmd_demo,
           "localize": cmd_localize}
    try:
        run[args.cmd](args)
    except (ValueError, OSError) as exc:
        print(f"splat: error: {exc}", file=sys.stderr)
        return 2
    return 0
