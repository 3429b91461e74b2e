"""A process that joins a multi-process run whose coordinator cannot be reached fails within its
timeout with an error naming the address, instead of waiting (JAX's own client ends the process
with a C++ abort after its deadline, five minutes by default)."""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from ._workers import run_worker

_WORKER = """
import json, sys, time
from jaxgraph.runtime import distributed
start = time.monotonic()
try:
    distributed.initialize(sys.argv[1], 2, 1, timeout_seconds=float(sys.argv[2]))
    message = None
except RuntimeError as exc:
    message = str(exc)
print("RESULT " + json.dumps({"message": message, "seconds": time.monotonic() - start}))
"""


def _closed_port() -> int:
    """A local port that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_coordinator_fails_within_the_timeout_and_names_the_address():
    address = f"127.0.0.1:{_closed_port()}"
    # a hang would hit the subprocess timeout (60 s) and fail the test there
    got = run_worker(_WORKER, address, 3, timeout=60)
    assert got["message"] is not None, "initialize returned though no coordinator listens"
    assert address in got["message"] and "coordinator" in got["message"]
    assert "refused" in got["message"].lower()
    assert 2.0 <= got["seconds"] <= 3.0 + 10.0  # waited (retrying) about the timeout, not forever


def test_a_listener_that_is_not_a_coordinator_is_refused():
    """A port that accepts connections but never answers (another program, a black-hole proxy)
    would leave JAX's client waiting out its whole deadline."""
    from jaxgraph.runtime import distributed

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    threading.Thread(target=lambda: [accepted.append(server.accept()[0]) for _ in range(100)], daemon=True).start()
    address = f"127.0.0.1:{server.getsockname()[1]}"
    start = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match=re.escape(address) + ".*HTTP/2"):
            distributed.wait_for_coordinator(address, 2.0, retry_seconds=0.2)
    finally:
        server.close()
    assert time.monotonic() - start < 2.0 + 6.0
    assert accepted, "the probe never connected"


def test_a_coordinator_that_answers_is_accepted():
    """The probe accepts an HTTP/2 server (gRPC, which JAX's coordinator is): here one that sends
    its SETTINGS frame, the first thing such a server writes on a new connection."""
    from jaxgraph.runtime import distributed

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.sendall(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))  # an empty SETTINGS frame
            conn.recv(64)

    threading.Thread(target=serve, daemon=True).start()
    try:
        distributed.wait_for_coordinator(f"127.0.0.1:{server.getsockname()[1]}", 5.0)
    finally:
        server.close()


def test_cli_reports_an_unreachable_coordinator(monkeypatch, capsys):
    """``jaxgraph solve --batch --coordinator`` for process 1: one error line naming the address,
    exit code 2 (the wait shortened here; the CLI waits the library's default, 300 s)."""
    from jaxgraph.cli import main
    from jaxgraph.runtime import distributed

    from . import _multiprocess_worker as worker

    probe = distributed.wait_for_coordinator
    monkeypatch.setattr(distributed, "wait_for_coordinator", lambda address, timeout: probe(address, 1.0))
    address = f"127.0.0.1:{_closed_port()}"
    code = main(["solve", str(worker.DATA), "--batch", "2", "--coordinator", address, "--num-processes", "2",
                 "--process-id", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and address in err and "coordinator" in err, err
