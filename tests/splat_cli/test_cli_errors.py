"""The ``splat`` CLI on bad input: one line ``splat: error: ...`` on stderr and exit
status 2 (never a traceback), flag values checked by argparse, ``--out`` checked before
any work, sizes that cannot fit refused before allocating."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from splat.cli import main

from ..splat.scenes import npz_scene, ply_model

ROOT = Path(__file__).resolve().parents[2]


def _fails(capsys, argv, *needles):
    """main(argv) returns 2 and prints exactly one line containing every needle."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("splat: error: ") and "\n" not in err, err
    assert "Traceback" not in err and "pickled" not in err
    for n in needles:
        assert str(n) in err, (n, err)
    return err


def test_missing_model_render_and_eval(tmp_path, capsys):
    missing = tmp_path / "nope" / "checkpoint.npz"
    _fails(capsys, ["render", str(missing), "--out", str(tmp_path / "r")], missing, "no such")
    _fails(capsys, ["eval", str(missing)], missing, "no such")
    _fails(capsys, ["render", str(tmp_path / "m.ply"), "--out", str(tmp_path / "r")],
           "m.ply: no such PLY file")


def test_non_npz_model(tmp_path, capsys):
    p = tmp_path / "model.npz"
    p.write_text("not numpy\n")
    _fails(capsys, ["render", str(p), "--out", str(tmp_path / "r")], p, "zip archive")
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    _fails(capsys, ["eval", str(tmp_path / "other.npz")], "other.npz",
           "not a splat checkpoint")


def test_missing_scene(tmp_path, capsys):
    _fails(capsys, ["train", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
           tmp_path / "nope", "no such scene")


def test_exit_status_2_from_the_command_line(tmp_path):
    """The real process: status 2, one line, no traceback (jaxgraph's convention)."""
    r = subprocess.run([sys.executable, "-m", "splat.cli", "render", str(tmp_path / "x.npz"),
                        "--out", str(tmp_path / "r")], capture_output=True, text=True,
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"splat: error: {tmp_path / 'x.npz'}: no such "
                                             ".npz file"] or "no such" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_unwritable_out_fails_before_any_work(tmp_path, capsys):
    """--out under a regular file cannot be created: refused in well under a second,
    before the scene is even read (the scene path here does not exist either)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    t0 = time.perf_counter()
    _fails(capsys, ["train", str(tmp_path / "no_scene"), "--out", str(blocker / "run")],
           "--out", blocker / "run", "cannot write")
    _fails(capsys, ["demo", "--out", str(blocker)], "--out", "not a directory")
    _fails(capsys, ["render", str(tmp_path / "no.ply"), "--out", str(blocker / "r")], "--out")
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("argv,flag", [
    (["train", "x", "--out", "o", "--capacity", "0"], "--capacity"),
    (["train", "x", "--out", "o", "--steps", "0"], "--steps"),
    (["train", "x", "--out", "o", "--downscale", "0"], "--downscale"),
    (["train", "x", "--out", "o", "--init-points", "-5"], "--init-points"),
    (["train", "x", "--out", "o", "--sh-degree", "4"], "--sh-degree"),
    (["train", "x", "--out", "o", "--log-every", "-1"], "--log-every"),
    (["train", "x", "--out", "o", "--pose-opt-start", "-1"], "--pose-opt-start"),
    (["demo", "--capacity", "abc"], "--capacity"),
    (["render", "m.ply", "--out", "o", "--views", "0"], "--views"),
    (["render", "m.ply", "--out", "o", "--size", "-3"], "--size"),
    (["eval", "m.npz", "--downscale", "0"], "--downscale"),
])
def test_bad_flag_values_are_argparse_errors(argv, flag, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "Traceback" not in err


def test_huge_render_refused_before_allocating(tmp_path, capsys):
    p = ply_model(tmp_path / "g.ply")
    t0 = time.perf_counter()
    _fails(capsys, ["render", str(p), "--out", str(tmp_path / "r"), "--size", "100000"],
           "100000x100000", "pixels")
    _fails(capsys, ["render", str(p), "--out", str(tmp_path / "r"), "--size", "40000",
                    "--views", "100000"], "GiB", "available")
    assert time.perf_counter() - t0 < 5


def test_reference_backend_capacity_refused_before_allocating(tmp_path, capsys):
    scene = npz_scene(tmp_path / "s.npz")
    t0 = time.perf_counter()
    _fails(capsys, ["train", str(scene), "--out", str(tmp_path / "o"), "--backend", "reference",
                    "--capacity", "100000000"], "--backend reference", "GiB",
           "lower --capacity or use --backend pallas")
    assert time.perf_counter() - t0 < 10


def test_non_finite_ply_render_drops_them_and_is_not_black(tmp_path, capsys):
    """One NaN mean used to make every view black with exit 0."""
    means = np.random.default_rng(3).normal(scale=0.3, size=(6, 3))
    means[2] = np.nan
    p = ply_model(tmp_path / "g.ply", 6, means=means)
    out = tmp_path / "views"
    assert main(["render", str(p), "--out", str(out), "--views", "1", "--size", "16"]) == 0
    err = capsys.readouterr().err
    assert f"{p}: dropped 1 of 6 Gaussians" in err
    from PIL import Image
    img = np.asarray(Image.open(out / "view_000.png"))
    assert img.shape == (16, 16, 3) and img.max() > 100


def test_rendered_views_checked(capsys):
    import functools

    from splat.checks import check_rendered
    from splat.cli.commands import warn

    _check_rendered = functools.partial(check_rendered, warn=warn)  # as `splat render` does
    _check_rendered(np.zeros((2, 4, 4, 3)), "render m.ply")
    assert "every rendered view is black" in capsys.readouterr().err
    _check_rendered(np.full((1, 4, 4, 3), 0.5), "render m.ply")
    assert capsys.readouterr().err == ""
    bad = np.zeros((1, 4, 4, 3))
    bad[0, 1, 1, 0] = np.nan
    with pytest.raises(RuntimeError, match="1 non-finite pixel values"):
        _check_rendered(bad, "render m.ply")


@pytest.mark.parametrize("bad", ["-1", "0", "nan", "inf", "x"])
def test_localize_robust_threshold_must_be_a_positive_number(bad, capsys):
    # refused while parsing, naming the flag, before any checkpoint is read
    from splat.cli import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["localize", "ck.npz", "img.png", "--robust", bad])
    assert e.value.code == 2
    assert "--robust" in capsys.readouterr().err
