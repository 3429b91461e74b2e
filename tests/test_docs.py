"""Every code block of README.md and docs/*.md runs as written.

```python blocks of a page run in order, in a fresh namespace (as a reader pasting them
one after another would), from a copy of the repository root (so relative paths
such as ``jaxgraph/data/intel.g2o`` and ``../shared/data/...`` resolve and files the
examples write land in a temporary folder). Tracebacks point at the page and line. A
block marked ```python no-run is deliberately not runnable (e.g. gsplat's PyTorch code);
that should be rare. A block marked ```python needs=jaxlie,flax runs only where those
modules are installed (optional extras); it is skipped, not failed, elsewhere.

```bash blocks: every ``splat`` / ``jaxgraph`` command must parse with the CLI's own
argument parser (flags exist, values are valid), and every ``python path.py`` script
must exist. They are not executed (they train or solve at full size).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
# A fence may be indented (inside a list item); the closing fence has the same indent.
FENCE = re.compile(r"^([ \t]*)```([^\n`]*)\n(.*?)^\1```[ \t]*$", re.M | re.S)
LANGUAGES = {"python": ("python", "py", "python3"), "bash": ("bash", "sh", "shell", "console")}
# Pages whose Python examples take longer than the fast suite allows; they still run
# with the slow tests. CPU seconds measured (2-core machine, Nov 2026): batching.md 199
# (vmapped, pmapped and differentiated intel solves), robust.md (chordal + LM and GNC on
# intel, minutes of compilation), solver.md 40 (intel.g2o
# solve, marginals, compilation cache), splat.md 28 (Pallas kernels compiled in interpret mode, forward and
# twice forward + backward), training.md 128 (500 training steps on fox); the fast pages
# g2o.md 20, lie.md 13, linear.md 5.
SLOW_PAGES = {"docs/batching.md", "docs/robust.md", "docs/solver.md", "docs/splat.md", "docs/training.md"}
PAGE_TIMEOUT_S = 600


def blocks(page: Path, language: str):
    """[(first line number of the code, info words, code)] of the page's fenced blocks."""
    text = page.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        info = m.group(2).split()
        if info and info[0] in LANGUAGES[language]:
            line = text.count("\n", 0, m.start(3)) + 1
            out.append((line, info[1:], textwrap.dedent(m.group(3))))
    return out


def _runnable(info) -> bool:
    """Whether a python block with info words ``info`` runs here: not ``no-run``, and every
    module of a ``needs=a,b`` word importable."""
    import importlib.util

    if "no-run" in info:
        return False
    for word in info:
        if word.startswith("needs="):
            if any(importlib.util.find_spec(m) is None for m in word[len("needs="):].split(",") if m):
                return False
    return True


def _rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


# JAXGRAPH_DOCS_FROM_INSTALL=1 (.ci/min_versions.sh sets it, in a venv holding the built
# wheel): the pages run as a user of the installed package would run them, from an empty
# folder outside the repository and without PYTHONPATH, so that a path into the checkout or
# a module only the checkout has fails. Pages whose examples read the development data in
# ../shared are left out there (that data is not part of the package).
FROM_INSTALL = os.environ.get("JAXGRAPH_DOCS_FROM_INSTALL") == "1"


def _reads_shared(page: Path) -> bool:
    return any("../shared" in src for _, info, src in blocks(page, "python") if _runnable(info))


def _page_params():
    params = []
    for page in PAGES:
        if any("no-run" not in info for _, info, _ in blocks(page, "python")):
            marks = [pytest.mark.slow] if _rel(page) in SLOW_PAGES else []
            if FROM_INSTALL and _reads_shared(page):
                marks.append(pytest.mark.skip(reason="reads the development data in ../shared"))
            params.append(pytest.param(page, id=_rel(page), marks=marks))
    return params


# One interpreter runs every selected page (JAX is imported and initialised once), each
# page in a fresh namespace with its own time limit; results come back as JSON.
RUNNER = """
import json, signal, sys, time, traceback
pages, out = json.load(open(sys.argv[1])), {}
def alarm(*_):
    raise TimeoutError(f"page ran longer than {sys.argv[2]} s")
signal.signal(signal.SIGALRM, alarm)
for page, code in pages.items():
    ns, t0, c0 = {"__name__": "__main__"}, time.perf_counter(), time.process_time()
    signal.alarm(int(sys.argv[2]))
    try:
        for line, src in code:
            exec(compile("\\n" * (line - 1) + src, page, "exec"), ns)
        err = None
    except BaseException:
        err = traceback.format_exc(limit=-6)
    signal.alarm(0)
    out[page] = dict(error=err, seconds=time.perf_counter() - t0,
                     cpu_seconds=time.process_time() - c0)
json.dump(out, open(sys.argv[3], "w"))
"""


def _sandbox(tmp_path: Path) -> Path:
    """tmp/repo: the repository's top-level entries linked in, tmp/shared -> ../shared."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".git", "peers"):
            (repo / entry.name).symlink_to(entry)
    shared = ROOT.parent / "shared"
    if shared.exists():
        (tmp_path / "shared").symlink_to(shared)
    return repo


@pytest.fixture(scope="module")
def page_results(request, tmp_path_factory):
    """{page: dict(error, seconds)} for every page selected in this session."""
    selected = [item.callspec.params["page"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_python_blocks_run"]
    tmp = tmp_path_factory.mktemp("docs")
    spec = {_rel(p): [(line, src) for line, info, src in blocks(p, "python")
                      if _runnable(info)] for p in selected}
    (tmp / "blocks.json").write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_ENABLE_X64", "XLA_"))}
    # caches the examples may enable (jaxgraph.enable_compilation_cache) stay in tmp
    env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", MPLBACKEND="Agg",
               XDG_CACHE_HOME=str(tmp / "cache"))
    if FROM_INSTALL:
        env.pop("PYTHONPATH")
        cwd = tmp / "outside"
        cwd.mkdir()
        where = subprocess.run([sys.executable, "-c", "import jaxgraph, splat; print(jaxgraph.__file__); "
                                "print(splat.__file__)"], cwd=cwd, env=env, capture_output=True, text=True)
        assert where.returncode == 0, where.stderr[-2000:]
        inside = [f for f in where.stdout.split() if Path(f).resolve().is_relative_to(ROOT)]
        assert not inside, f"the installed package was expected, the checkout was imported: {inside}"
    else:
        cwd = _sandbox(tmp)
    r = subprocess.run([sys.executable, "-c", RUNNER, str(tmp / "blocks.json"),
                        str(PAGE_TIMEOUT_S), str(tmp / "results.json")], cwd=cwd,
                       env=env, capture_output=True, text=True,
                       timeout=PAGE_TIMEOUT_S * max(1, len(selected)) + 60)
    assert r.returncode == 0, f"docs runner crashed:\n{r.stderr[-4000:]}"
    return json.loads((tmp / "results.json").read_text())


@pytest.mark.parametrize("page", _page_params())
def test_python_blocks_run(page, page_results):
    res = page_results[_rel(page)]
    if res["error"] is not None:
        pytest.fail(f"{_rel(page)}: a python block failed\n{res['error']}", pytrace=False)


def _commands(page: Path):
    """(line, argv) of each shell command in the page's bash blocks (continuations joined,
    ``&&`` chains split, comments dropped)."""
    out = []
    for line, _, src in blocks(page, "bash"):
        joined = src.replace("\\\n", " ")
        for k, text in enumerate(joined.splitlines()):
            for part in text.split("&&"):
                argv = shlex.split(part, comments=True)
                if argv:
                    out.append((line + k, argv))
    return out


def _check_jaxgraph(argv):
    """Every --flag used exists in the help of that jaxgraph subcommand."""
    from jaxgraph.cli import main

    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        main([argv[0], "--help"])
    flags = set(re.findall(r"(--[a-z0-9-]+)", buf.getvalue()))
    used = {a.split("=")[0] for a in argv if a.startswith("--")}
    assert used <= flags, f"unknown flags {sorted(used - flags)}"


@pytest.mark.parametrize("page", [pytest.param(p, id=_rel(p)) for p in PAGES
                                  if blocks(p, "bash")])
def test_bash_commands_parse(page, capsys):
    from splat.cli import build_parser

    for line, argv in _commands(page):
        where = f"{_rel(page)}:{line}: {shlex.join(argv)}"
        if argv[0] == "splat":
            try:
                build_parser().parse_args(argv[1:])
            except SystemExit:
                pytest.fail(f"{where}: {capsys.readouterr().err.strip()}")
        elif argv[0] == "jaxgraph":
            try:
                _check_jaxgraph(argv[1:])
            except AssertionError as e:
                pytest.fail(f"{where}: {e}")
        elif argv[0] in ("python", "python3") and argv[1:] and argv[1].endswith(".py"):
            assert (ROOT / argv[1]).is_file(), f"{where}: no such script"
