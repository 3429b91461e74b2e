"""Run jaxlie's own test suite against ``jaxgraph.lie`` and print the pass/fail counts.

    python benchmarks/jaxlie_suite.py [--source DIR_OR_TARBALL] [--out FILE] [-- PYTEST_ARGS...]

jaxlie's ``tests/`` folder at the pinned commit (tag v1.5.0) is downloaded from GitHub into the
ignored folder ``peers/`` (or taken from ``--source``: a jaxlie git directory or a GitHub source
tarball, for machines without network access). A ``conftest.py`` written next to those tests
puts a shim module named ``jaxlie`` into ``sys.modules`` that is ``jaxgraph.lie``, so the
unmodified tests import and test our classes. jaxlie's test modules are never copied into the
repository.

The shim also answers the four private helpers that ``test_jac_left.py`` reads from jaxlie's
private modules (``jaxlie._se2._SE2_jac_left[_inv]``, ``jaxlie._so3._SO3_jac_left[_inv]``) with
our public Jacobians, so those tests check our closed forms against autodiff as well.

Writes a JSON summary (counts, the failures, the documented exceptions, the machine) to
``benchmarks/results/jaxlie_suite.json``. Exit status 0 when every failure is a documented
exception (see ``EXCEPTIONS`` and docs/lie.md), 1 otherwise.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _machine import machine_info  # noqa: E402

JAXLIE_COMMIT = "0b6655fbadd8ea10b0d1640912a6b07cc4f576d8"  # brentyi/jaxlie tag v1.5.0
ARCHIVE_URL = f"https://codeload.github.com/brentyi/jaxlie/tar.gz/{JAXLIE_COMMIT}"

# Test ids (pytest node ids without parameters) that may fail, with the reason. Each is also
# listed in docs/lie.md. Empty: every test of the pinned suite passes.
EXCEPTIONS: dict[str, str] = {}

SHIM = '''"""Written by benchmarks/jaxlie_suite.py: ``import jaxlie`` resolves to ``jaxgraph.lie``."""
import sys
import types

import jax.numpy as jnp

from jaxgraph import lie

shim = types.ModuleType("jaxlie")
shim.__dict__.update({k: v for k, v in vars(lie).items() if not k.startswith("__")})


def _se2_tangent(theta):
    return jnp.concatenate([jnp.zeros(theta.shape[:-1] + (2,), theta.dtype), theta], axis=-1)


# jaxlie's private Jacobian helpers, answered with our public functions (same mathematics:
# SE(2)'s V(theta) is the translation block of its left Jacobian; SO(3)'s is the left Jacobian).
shim._se2 = types.SimpleNamespace(
    _SE2_jac_left=lambda theta: lie.se2_left_jacobian(_se2_tangent(theta))[..., :2, :2],
    _SE2_jac_left_inv=lambda theta: lie.se2_left_jacobian_inverse(_se2_tangent(theta))[..., :2, :2],
)
shim._so3 = types.SimpleNamespace(
    _SO3_jac_left=lambda theta, rotation_matrix: lie.so3_left_jacobian(theta),
    _SO3_jac_left_inv=lie.so3_left_jacobian_inverse,
)
sys.modules["jaxlie"] = shim
for name in ("hints", "manifold", "utils"):
    sys.modules["jaxlie." + name] = getattr(lie, name)
'''


def fetch_tests(source: str | None, dest: Path) -> Path:
    """Put jaxlie's tests/ at the pinned commit into ``dest``; return the tests folder."""
    tests = dest / "tests"
    if (tests / "utils.py").exists():
        return tests
    dest.mkdir(parents=True, exist_ok=True)
    if source and Path(source).is_dir():
        data = subprocess.run(
            ["git", f"--git-dir={_git_dir(Path(source))}", "archive", "--format=tar", JAXLIE_COMMIT, "tests"],
            check=True,
            capture_output=True,
        ).stdout
        tarfile.open(fileobj=io.BytesIO(data)).extractall(dest, filter="data")
        return tests
    if source:
        data = Path(source).read_bytes()
    else:
        print(f"downloading {ARCHIVE_URL}", file=sys.stderr)
        with urllib.request.urlopen(ARCHIVE_URL, timeout=60) as response:
            data = response.read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        members = []
        for member in archive.getmembers():
            parts = Path(member.name).parts
            if len(parts) >= 2 and parts[1] == "tests":
                member.name = str(Path(*parts[1:]))
                members.append(member)
        if not members:
            raise SystemExit(f"no tests/ folder in {source or ARCHIVE_URL}")
        archive.extractall(dest, members=members, filter="data")
    return tests


def _git_dir(path: Path) -> Path:
    return path / ".git" if (path / ".git").exists() else path


def run_suite(tests: Path, pytest_args: list[str]) -> dict:
    (tests / "conftest.py").write_text(SHIM)
    (tests.parent / "pytest.ini").write_text("[pytest]\n")
    report = tests.parent / "report.xml"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    command = [
        sys.executable, "-m", "pytest", str(tests), "-q", "-p", "no:cacheprovider",
        f"--rootdir={tests.parent}", f"-c={tests.parent / 'pytest.ini'}", f"--junitxml={report}", *pytest_args,
    ]
    start = time.perf_counter()
    completed = subprocess.run(command, env=env, cwd=tests.parent)
    seconds = time.perf_counter() - start
    return {"returncode": completed.returncode, "seconds": round(seconds, 1), **_parse(report)}


def _parse(report: Path) -> dict:
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failures = []
    for case in ET.parse(report).getroot().iter("testcase"):
        node = f"{case.get('classname', '').split('.')[-1]}.py::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            counts["failed"] += 1
            failures.append(node)
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return {**counts, "failures": failures}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=None, help="jaxlie git directory or source tarball (default: download from GitHub)")
    parser.add_argument("--dest", default=str(REPO / "peers" / f"jaxlie-{JAXLIE_COMMIT[:12]}"), help="folder for jaxlie's tests (default: peers/jaxlie-<commit>)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "jaxlie_suite.json"), help="JSON summary path")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)

    tests = fetch_tests(args.source, Path(args.dest))
    load_before = os.getloadavg()
    result = run_suite(tests, args.pytest_args)
    unexpected = [f for f in result["failures"] if f.split("[")[0] not in EXCEPTIONS]
    summary = {
        "suite": "jaxlie tests/ against jaxgraph.lie",
        "jaxlie_commit": JAXLIE_COMMIT,
        "jaxlie_tag": "v1.5.0",
        **{k: result[k] for k in ("passed", "failed", "skipped", "seconds")},
        "failures": result["failures"],
        "unexpected_failures": unexpected,
        "exceptions": EXCEPTIONS,
        "pytest_args": args.pytest_args,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "machine": machine_info(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"jaxlie {summary['jaxlie_tag']} suite on jaxgraph.lie: {result['passed']} passed, {result['failed']} failed, "
        f"{result['skipped']} skipped ({len(unexpected)} failures not documented as exceptions); {args.out}"
    )
    return 0 if not unexpected and result["passed"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
