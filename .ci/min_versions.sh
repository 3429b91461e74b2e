#!/usr/bin/env bash
# The declared minimum versions, tested: pyproject.toml's lower bounds resolved with uv's
# lowest-direct strategy among CPython wheels (the oldest versions a user can get), in a
# fresh virtual environment that holds the project as a built wheel, not the checkout.
# There it (1) runs the docs' python blocks from a folder outside the repository
# (JAXGRAPH_DOCS_FROM_INSTALL=1: pages that read ../shared are left out), (2) builds the
# API reference with Sphinx, warnings as errors, and checks that it covers every public
# name, and (3) runs a fast subset of the suite on those versions: the bad-input tests, the
# CLI end to end (a 2D and a 3D solve, the demo, the stored-solve reuse), small programs' XLA
# options (an option the floor's XLA does not know is left out), docstring shapes,
# and a coordinator that cannot be reached (JAX's distributed client at the floor). The
# `plot` extra is included, so the plots are drawn with the oldest matplotlib allowed.
# About 4-5 minutes on the 2-core CI machine, most of it downloading and installing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
venv=$work/venv
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q uv
uv=("$venv/bin/uv" pip)
"${uv[@]}" compile -q --python "$venv/bin/python" --resolution lowest-direct --only-binary :all: \
    --extra test --extra plot pyproject.toml -o "$work/minimum.txt"
echo "minimum versions: $(grep -E '^(jax|jaxlib|numpy|scipy|optax|pillow|cvxopt|filelock|flax|jaxlie|matplotlib)==' \
    "$work/minimum.txt" | tr '\n' ' ')"
"${uv[@]}" install -q --python "$venv/bin/python" -r "$work/minimum.txt"
"${uv[@]}" install -q --python "$venv/bin/python" --no-deps "$root"   # the built wheel
"${uv[@]}" install -q --python "$venv/bin/python" sphinx                # newest: builds docs/api
JAXGRAPH_DOCS_FROM_INSTALL=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not slow" \
    tests/test_docs.py tests/test_api_reference.py \
    tests/io/test_g2o.py tests/cli/test_bad_flags.py tests/cli/test_version.py \
    tests/graph/test_bad_settings.py tests/splat/test_bad_inputs.py tests/lie/test_dataclass_api.py \
    tests/test_docstrings.py tests/runtime/test_coordinator_unreachable.py tests/cli/test_demo.py \
    "tests/cli/test_cli.py::test_cli_solve_end_to_end" \
    "tests/runtime/test_tiered_compile.py::test_an_option_this_xla_does_not_know_is_left_out_and_other_errors_are_raised" \
    "tests/runtime/test_tiered_compile.py::test_small_programs_compile_with_the_small_options_and_large_ones_with_the_default" \
    "tests/cli/test_cli.py::test_cli_reuses_the_cached_solve_for_a_new_graph_of_the_size_class"
