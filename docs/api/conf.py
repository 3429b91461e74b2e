"""Sphinx configuration of the API reference (``python -m sphinx -W -b html docs/api OUT``):
every public name of ``jaxgraph`` and ``splat`` from its docstring (autodoc, Google-style
sections through napoleon). The hand-written guides are the Markdown pages in ``docs/``."""

project = "jaxgraph"
author = "the jaxgraph authors"
copyright = "2026, the jaxgraph authors"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" sections as fields of the class (a NamedTuple also lists its fields)
napoleon_use_ivar = True
exclude_patterns = ["_build"]
html_theme = "alabaster"
# names in signatures that Sphinx cannot resolve are not errors; broken references in the
# text are (the build runs with -W)
nitpicky = False
# docstrings of jaxgraph.lie write the norm of a rotation vector as |w| (plain text in the
# source); in reStructuredText that is a substitution, defined here to print as written
rst_prolog = ".. |w| replace:: ``|w|``\n"
