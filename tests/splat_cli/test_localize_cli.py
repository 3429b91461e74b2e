"""``splat localize`` on a checkpoint of ``splat demo`` and one of its scene's images."""

import json

import numpy as np
import pytest

from splat.cli import main
from splat.io import write_png


@pytest.mark.slow
def test_splat_localize_writes_a_pose(tmp_path):
    from splat.datasets import DEMO_SCENE, load_npz

    run = tmp_path / "run"
    assert main(["demo", "--out", str(run), "--steps", "5", "--log-every", "0",
                 "--capacity", "512", "--sh-degree", "0", "--strategy", "none"]) == 0
    scene = load_npz(DEMO_SCENE)
    with np.load(run / "checkpoint.npz") as z:
        vms = z["viewmats"]
    view = int(scene.test_idx[0])
    write_png(tmp_path / "img.png", scene.images[view])
    out = tmp_path / "loc"
    assert main(["localize", str(run / "checkpoint.npz"), str(tmp_path / "img.png"), "--view",
                 str(view), "--levels", "1", "--max-iterations", "3", "--out", str(out)]) == 0
    res = json.loads((out / "pose.json").read_text())
    vm = np.asarray(res["viewmat"])
    assert vm.shape == (4, 4) and np.isfinite(vm).all()
    np.testing.assert_allclose(vm[3], [0, 0, 0, 1])
    assert res["iterations"] <= 3 and res["status"] in range(9)
    assert np.abs(vm - vms[view]).max() < 0.5  # started at that camera's pose
    # a wrong-size image is a user error (exit 2), not a crash
    write_png(tmp_path / "small.png", scene.images[view][:10, :10])
    assert main(["localize", str(run / "checkpoint.npz"), str(tmp_path / "small.png")]) == 2
