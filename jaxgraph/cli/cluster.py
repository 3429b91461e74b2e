"""``--distributed`` / ``--coordinator`` / ``--num-processes`` / ``--process-id``: ``jaxgraph solve
--batch`` as one process of a multi-process run (docs/batching.md). The flags are read here;
:mod:`jaxgraph.distributed` joins the run from plain arguments."""

from __future__ import annotations

import argparse

from .common import positive_float, positive_int


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add the multi-process flags to ``parser`` (the ``solve`` subcommand)."""
    parser.add_argument("--distributed", choices=["off", "auto"], default="off",
                        help="with --batch: 'auto' joins a multi-process run detected from the cluster environment "
                             "(SLURM, Open MPI) (default: off, one process)")
    parser.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                        help="with --batch: process 0's coordinator address; needs --num-processes and --process-id "
                             "(default: none, one process)")
    parser.add_argument("--num-processes", type=positive_int, default=None, metavar="N",
                        help="with --coordinator: processes in the run (default: none)")
    parser.add_argument("--process-id", type=int, default=None, metavar="I",
                        help="with --coordinator: this process, 0..N-1 (default: none)")
    parser.add_argument("--coordinator-timeout", type=positive_float, default=300.0, metavar="SECONDS",
                        help="with --coordinator: how long a process other than 0 waits for the coordinator "
                             "to answer before it fails naming the address, and JAX for every process to join "
                             "(default: 300)")


def _manual(args: argparse.Namespace) -> list:
    return [args.coordinator, args.num_processes, args.process_id]


def flags_given(args: argparse.Namespace) -> bool:
    """Whether ``args`` asks for a multi-process run (``--distributed auto`` or any manual flag)."""
    return args.distributed != "off" or any(x is not None for x in _manual(args))


def join_run(args: argparse.Namespace):
    """Join the run that the flags in ``args`` describe; None for a plain single-process run.

    Returns a :class:`jaxgraph.distributed.RunInfo`. Raises ``ValueError`` for flags that do
    not go together or a bad address or process id, ``RuntimeError`` when no cluster is found
    or the coordinator cannot be reached.
    """
    if not flags_given(args):
        return None
    from ..runtime import distributed

    if args.distributed == "auto":
        if any(x is not None for x in _manual(args)):
            raise ValueError("--distributed auto takes the process layout from the cluster; "
                             "drop --coordinator/--num-processes/--process-id")
        try:
            return distributed.initialize()
        except (ValueError, RuntimeError) as exc:  # JAX: "coordinator_address should be defined."
            raise RuntimeError(f"--distributed auto found no multi-process cluster (JAX detects SLURM and Open MPI "
                               f"jobs from their environment variables; JAX said: {exc}); drop --distributed for "
                               "one process, or give --coordinator, --num-processes and --process-id") from None
    if any(x is None for x in _manual(args)):
        raise ValueError("--coordinator, --num-processes and --process-id go together")
    return distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                                  timeout_seconds=args.coordinator_timeout)
