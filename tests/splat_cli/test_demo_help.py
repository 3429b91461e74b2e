"""Demo output a person can read (labelled, enlarged ground truth | render) and help
text with a default on every flag of ``splat``."""

import argparse

import numpy as np
import pytest

from splat.cli import DEMO_OUT, build_parser
from splat.figures import BAR, GAP, comparison_panel, save_views


def _subparsers(parser):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return a.choices
    raise AssertionError("no subcommands")


def test_every_flag_has_help_and_a_default():
    subs = _subparsers(build_parser())
    assert set(subs) == {"train", "render", "eval", "localize", "demo"}
    for name, sub in subs.items():
        fmt = sub._get_formatter()
        for a in sub._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            assert a.help, f"splat {name} {a.dest}: no help text"
            if a.option_strings and not a.required:
                text = fmt._get_help_string(a) % vars(a)
                assert "default" in text, f"splat {name} {a.option_strings[0]}: no default"
        assert "default:" in sub.format_help()


def test_demo_has_a_default_out():
    assert build_parser().parse_args(["demo"]).out == DEMO_OUT == "splat_demo"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "scene"])  # train still requires --out


def test_comparison_panel_layout():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (52, 81, 3), dtype=np.uint8)
    render = rng.uniform(size=(52, 81, 3))
    pic = comparison_panel(gt, render, 17.25)
    s = 5  # ceil(400 / 81)
    assert pic.dtype == np.uint8 and pic.shape == (BAR + 52 * s, 2 * 81 * s + GAP, 3)
    # each panel is the image enlarged by nearest-neighbour repetition, gt on the left
    np.testing.assert_array_equal(pic[BAR:, :81 * s], np.kron(gt, np.ones((s, s, 1), np.uint8)))
    right = pic[BAR:, 81 * s + GAP:]
    np.testing.assert_array_equal(right[::s, ::s], np.round(render * 255).astype(np.uint8))
    # both labels are drawn (dark text on the white bar), above each panel
    bar = pic[:BAR].min(axis=2)
    assert (bar[:, :81 * s] < 100).any() and (bar[:, 81 * s + GAP:] < 100).any()
    # a large render is not enlarged
    big = comparison_panel(np.zeros((10, 500, 3), np.uint8), np.zeros((10, 500, 3)), 30.0)
    assert big.shape == (BAR + 10, 1000 + GAP, 3)


def test_saved_test_views_are_labelled_panels(tmp_path):
    from PIL import Image
    imgs = np.full((2, 12, 16, 3), 0.5)
    gts = np.full((2, 12, 16, 3), 100, np.uint8)
    paths = save_views(str(tmp_path), imgs, gts, np.array([20.0, 21.0]), prefix="test")
    assert [p.rsplit("/", 1)[1] for p in paths] == ["test_000.png", "test_001.png"]
    pic = np.asarray(Image.open(paths[0]))
    assert pic.shape[1] >= 800 and pic.shape[0] == BAR + 12 * 25
