"""Reading user files and preparing output folders, with one-line errors.

Every function raises ``ValueError`` (or ``FileNotFoundError``) with a message that names
the file, what was found and what was expected, so that the ``splat`` CLI can print it as
``splat: error: ...`` and exit with status 2.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np


def require_file(path, what: str = "file") -> str:
    """``path`` as str if it is an existing regular file, else FileNotFoundError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such {what}")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: is a directory, expected a {what}")
    return path


def read_json(path) -> object:
    """Parse a JSON file; a syntax error names the file, line and column."""
    path = require_file(path, "JSON file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}:{e.colno}: invalid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None


def open_npz(path, what: str = ".npz file"):
    """``np.load`` of an .npz archive (no pickles), with errors that say what the file is.

    numpy's own message for a file that is not a zip archive is "Cannot load file
    containing pickled data", which misleads; here the first bytes are checked first.
    """
    path = require_file(path, what)
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(b"\x93NUMPY"):
        raise ValueError(f"{path}: is a single-array .npy file, expected a {what} "
                         "(a zip archive written by numpy.savez)")
    if not head.startswith(b"PK"):
        raise ValueError(f"{path}: not a {what} (expected a zip archive written by "
                         f"numpy.savez; the file starts with {head[:4]!r})")
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: damaged {what} ({e})") from None


def npz_array(z, key: str, path, what: str = ".npz file"):
    """``z[key]`` with one-line errors for a missing key, a truncated member or pickles."""
    if key not in z.files:
        raise ValueError(f"{path}: {what} has no array {key!r} (it has {sorted(z.files)})")
    try:
        return z[key]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: array {key!r} cannot be read ({e})") from None


def prepare_out_dir(path, flag: str = "--out") -> str:
    """Create the output folder ``path`` and check that a file can be written into it.

    Done before any work, so that a long run never fails at the end because of a typo or
    a read-only location. Returns the path.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path}: exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".splat_write_test_{os.getpid()}")
        with open(probe, "wb") as f:
            f.write(b"ok")
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None
    return path
