"""Every public function, class and method whose signature declares an array argument (annotated
``jax.Array``, ``numpy.ndarray`` or ``ArrayLike``, alone or in a union) states a shape in its
docstring: a bracketed shape such as ``[N, 3]`` or ``[...]``, a tuple shape such as ``(4,)`` or
``(N, 3)``, or the words "shape" or "scalar". Public: the names in ``__all__`` of the modules
below and, for classes, their methods not starting with ``_``. (Arguments without annotations
cannot be told apart from non-arrays mechanically; docs/api lists every public name, and the
coverage of the rest is measured by hand, see CHANGELOG.md.)"""

import importlib
import inspect
import re
import warnings

MODULES = ["jaxgraph", "jaxgraph.graph", "jaxgraph.io", "jaxgraph.runtime", "jaxgraph.solver",
           "jaxgraph.factors", "jaxgraph.noise", "jaxgraph.robust", "jaxgraph.linear", "jaxgraph.data",
           "jaxgraph.initialize", "jaxgraph.distributed", "jaxgraph.lie", "splat", "splat.datasets",
           "splat.io", "splat.train", "splat.data"]

SHAPE = re.compile(r"\[[^\]]*\]|\(\s*[\w*+\-.]*\s*,[^)]*\)|\bshape\b|\bscalar\b", re.I)
ARRAY = re.compile(r"\b(Array|ndarray|ArrayLike)\b")


# Public names allowed to lack a shape for now (empty: jaxgraph.lie's last eight gaps are
# filled); the test fails when a name not listed here lacks a shape, and warns when a listed
# one has gained it (then delete it here)
KNOWN_MISSING: set = set()


def _public():
    """(qualified name, object) of every public function, class and class method."""
    seen = {}
    for name in MODULES:
        mod = importlib.import_module(name)
        names = getattr(mod, "__all__", None)
        if names is None:  # jaxgraph.lie has no __all__: its public functions and classes
            names = [k for k, v in vars(mod).items() if not k.startswith("_")
                     and (inspect.isfunction(v) or inspect.isclass(v))]
        for key in names:
            obj = getattr(mod, key)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                seen.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    out = dict(seen)
    for qual, obj in seen.items():
        if inspect.isclass(obj):
            for k, v in vars(obj).items():
                if not k.startswith("_") and inspect.isfunction(v):
                    out.setdefault(f"{qual}.{k}", v)
    return out


def _array_arguments(obj):
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values()
            if p.annotation is not inspect.Parameter.empty and ARRAY.search(str(p.annotation))]


def test_rule_matches_what_it_should():
    assert SHAPE.search("``x [..., n, d]``") and SHAPE.search("(4,)") and SHAPE.search("(N, 3)")
    assert SHAPE.search("a scalar") and not SHAPE.search("Cost of a residual (s >= 0).")


def test_every_array_argument_has_a_shape_in_the_docstring():
    public = _public()
    checked, missing = 0, []
    for qual, obj in sorted(public.items()):
        args = _array_arguments(obj)
        if not args:
            continue
        checked += 1
        doc = inspect.getdoc(obj) or ""
        if inspect.isclass(obj):  # a class's shapes may sit in its __init__'s docstring
            doc += "\n" + (inspect.getdoc(obj.__init__) or "")
        if not SHAPE.search(doc):
            missing.append(f"{qual}({', '.join(args)})")
    assert checked >= 10, f"the rule found only {checked} annotated callables; is the annotation check broken?"
    new = sorted(set(missing) - KNOWN_MISSING)
    assert not new, "docstrings without a shape for array arguments:\n" + "\n".join(new)
    fixed = sorted(KNOWN_MISSING - set(missing))
    if fixed:
        warnings.warn(f"these now state a shape; remove them from KNOWN_MISSING: {fixed}")
