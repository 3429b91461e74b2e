"""`splat render --size` is honoured for a checkpoint's cameras (it was ignored: the demo's
162 x 105 views came out at 162 x 105 whatever --size said), and a checkpoint of the bundled
scene names it as bundled, so `splat eval` finds it after the package is reinstalled
elsewhere (issue 23). The renderer is replaced by a recorder: no compilation."""

import json

import numpy as np
import pytest

import splat.data
from splat.cli import DEMO_SCENE, main
from splat.cli import commands
from splat.datasets import load_npz
from splat.train import Trainer, save_checkpoint
from splat.train.state import TrainConfig


@pytest.fixture
def checkpoint(tmp_path):
    scene = load_npz(DEMO_SCENE)  # 162 x 105
    trainer = Trainer(scene, TrainConfig(capacity=64, sh_degree=0, steps=1))
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, trainer, trainer.init_state(seed=0),
                    extra=dict(data=splat.data.BUNDLED_PREFIX + "demo_scene.npz", downscale=1))
    return path


@pytest.fixture
def recorder(monkeypatch):
    calls = []

    def render_model(params, cfg, viewmats, Ks, width, height):
        calls.append(dict(Ks=np.asarray(Ks), width=width, height=height))
        return np.full((len(viewmats), height, width, 3), 0.5, np.float32)

    import splat.train
    monkeypatch.setattr(splat.train, "render_model", render_model)
    return calls


def test_render_size_scales_the_checkpoint_cameras(checkpoint, recorder, tmp_path):
    assert main(["render", str(checkpoint), "--out", str(tmp_path / "native")]) == 0
    assert main(["render", str(checkpoint), "--out", str(tmp_path / "big"), "--size", "324"]) == 0
    native, big = recorder
    assert (native["width"], native["height"]) == (162, 105)
    assert (big["width"], big["height"]) == (324, 210)  # the longer side is --size, aspect kept
    np.testing.assert_allclose(big["Ks"][:, :2, :], native["Ks"][:, :2, :] * 2)
    np.testing.assert_array_equal(big["Ks"][:, 2], native["Ks"][:, 2])


def test_demo_checkpoint_names_the_bundled_scene_not_its_path(checkpoint, recorder, tmp_path, capsys):
    meta = json.loads(str(np.load(checkpoint)["meta"]))
    assert meta["data"] == "bundled:demo_scene.npz"
    assert splat.data.resolve(meta["data"]) == str(splat.data.path("demo_scene.npz")) == DEMO_SCENE
    assert splat.data.resolve("some/folder") == "some/folder"
    assert main(["eval", str(checkpoint)]) == 0  # found through splat.data, wherever it is installed
    assert "mean" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match=r"no bundled data file 'nope\.npz'; bundled: \['demo_scene\.npz'\]"):
        splat.data.resolve("bundled:nope.npz")
