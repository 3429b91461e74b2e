"""Reading whitespace-separated text files with errors that name the file and line.

Every reader of :mod:`jaxgraph.io` raises :class:`FormatError` (a ``ValueError``) whose message
starts with ``path:line:`` and says what was expected and what was found. A file that ends
early names the line after its last one (``found the end of the file``).
"""

from __future__ import annotations

import math
import os
import re

__all__ = ["FormatError", "G2OFormatError", "Reader", "err", "fmt", "parse_floats", "parse_int", "text_lines"]


class FormatError(ValueError):
    """Malformed input file; the message starts with ``path:line:`` and names the problem."""


class G2OFormatError(FormatError):
    """Malformed g2o input; the message names the file, the line and the problem."""


def err(path, lineno, msg, cls=FormatError) -> FormatError:
    """``cls("path:lineno: msg")``."""
    return cls(f"{path}:{lineno}: {msg}")


_INT = re.compile(r"[+-]?[0-9]+")
INT64_MAX = 2**63 - 1


def _float(tok: str) -> float:
    """``float(tok)``, but refusing digit-group underscores (Python reads ``1_0`` as 10)."""
    if "_" in tok:
        raise ValueError(tok)
    return float(tok)


def parse_int(tok, path, lineno, what, pos, cls=FormatError) -> int:
    """``tok`` as an integer id (ASCII digits with an optional sign, within int64); else
    ``path:lineno: what (token pos) 'tok' is not an integer id`` (Python's ``int`` would also
    take ``3_0`` as 30 and numbers too large for the int64 id arrays)."""
    if not _INT.fullmatch(tok):
        raise err(path, lineno, f"{what} (token {pos}) {tok!r} is not an integer id", cls)
    v = int(tok)
    if abs(v) > INT64_MAX:
        raise err(path, lineno, f"{what} (token {pos}) {tok!r} is outside the int64 range of ids", cls)
    return v


def parse_floats(toks, path, lineno, tag, first_pos, cls=FormatError) -> list:
    """Finite floats of ``toks``; else ``path:lineno: tag: token k 'x' is not a number`` (or non-finite)."""
    out = []
    for k, tok in enumerate(toks):
        try:
            v = _float(tok)
        except ValueError:
            raise err(path, lineno, f"{tag}: token {first_pos + k} {tok!r} is not a number", cls) from None
        if not math.isfinite(v):
            raise err(path, lineno, f"{tag}: token {first_pos + k} is non-finite ({tok!r})", cls)
        out.append(v)
    return out


def fmt(x: float) -> str:
    """Shortest text that reads back as the same float64 (Python's ``repr``)."""
    return float.__repr__(float(x))


def text_lines(path, cls=FormatError) -> list:
    """The lines of a UTF-8 text file. A line that is not UTF-8 raises ``path:line: ...``
    naming the byte and column, unless it is a ``#`` comment (decoded with replacement
    characters: a latin-1 comment is harmless)."""
    with open(path, "rb") as fh:
        data = fh.read()
    out = []
    for lineno, raw in enumerate(data.splitlines(), 1):
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            if raw.lstrip().startswith(b"#"):
                out.append(raw.decode("utf-8", errors="replace"))
                continue
            raise err(path, lineno, f"not UTF-8 text: byte 0x{raw[e.start]:02x} at column {e.start + 1} "
                      f"(the file must be UTF-8 or ASCII)", cls) from None
    return out


class Reader:
    """The non-blank lines of a text file, read as whole lines or as a stream of tokens.

    ``skip_comments``: lines whose first token starts with ``#`` are skipped.
    """

    def __init__(self, path, *, skip_comments: bool = False):
        self.path = os.fspath(path)
        raw = text_lines(self.path)
        self.last_line = len(raw)
        self._lines = []
        for lineno, line in enumerate(raw, 1):
            toks = line.split()
            if toks and not (skip_comments and toks[0].startswith("#")):
                self._lines.append((lineno, toks))
        self._i = 0  # next line
        self._j = 0  # next token within it

    def error(self, lineno, msg) -> FormatError:
        return err(self.path, lineno, msg)

    def eof(self, what) -> FormatError:
        """``path:N+1: expected what, found the end of the file`` (N = number of lines)."""
        return err(self.path, self.last_line + 1, f"expected {what}, found the end of the file")

    @property
    def at_end(self) -> bool:
        return self._i >= len(self._lines)

    def peek_line(self):
        """``(lineno, tokens)`` of the next line, not consumed; None at the end."""
        return None if self.at_end else self._lines[self._i]

    def line(self, what, count=None):
        """The next whole line ``(lineno, tokens)``; with ``count``, it must hold exactly that many tokens."""
        if self._j:
            lineno, toks = self._lines[self._i]
            raise self.error(lineno, f"expected {what} on a new line, found {' '.join(toks[self._j:])!r} after "
                             f"{self._j} tokens")
        if self.at_end:
            raise self.eof(what)
        lineno, toks = self._lines[self._i]
        self._i += 1
        if count is not None and len(toks) != count:
            raise self.error(lineno, f"expected {what} ({count} tokens), found {len(toks)} token(s): {' '.join(toks)!r}")
        return lineno, toks

    def tokens(self, n, what):
        """The next ``n`` tokens, across lines: ``(first lineno, [(lineno, token), ...])``."""
        out = []
        while len(out) < n:
            if self.at_end:
                raise self.eof(f"{what} ({n} numbers, found {len(out)})")
            lineno, toks = self._lines[self._i]
            take = toks[self._j : self._j + n - len(out)]
            out.extend((lineno, t) for t in take)
            self._j += len(take)
            if self._j >= len(toks):
                self._i, self._j = self._i + 1, 0
        return out[0][0], out

    def floats(self, n, what):
        """The next ``n`` tokens as finite floats (see :meth:`tokens`)."""
        first, toks = self.tokens(n, what)
        return first, [self.number(tok, lineno, what) for lineno, tok in toks]

    def number(self, tok, lineno, what) -> float:
        """``tok`` as a finite float, else an error naming ``what`` and the token."""
        try:
            v = _float(tok)
        except ValueError:
            raise self.error(lineno, f"{what}: expected a number, found {tok!r}") from None
        if not math.isfinite(v):
            raise self.error(lineno, f"{what}: expected a finite number, found {tok!r}")
        return v

    def integer(self, tok, lineno, what, *, low=0, high=None) -> int:
        """``tok`` as an integer in ``[low, high)`` (None: no bound on that side), else an error."""
        if not _INT.fullmatch(tok):
            raise self.error(lineno, f"{what}: expected an integer, found {tok!r}")
        v = int(tok)
        if (low is not None and v < low) or (high is not None and v >= high):
            bound = f"[{low}, {high})" if high is not None else f">= {low}"
            raise self.error(lineno, f"{what}: expected an integer in {bound}, found {v}")
        return v

    def expect_end(self, what):
        """Raise naming the first token left over after ``what``."""
        if self._j or not self.at_end:
            lineno, toks = self._lines[self._i]
            raise self.error(lineno, f"expected the end of the file after {what}, found {toks[self._j]!r}")
