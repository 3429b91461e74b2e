"""A problem solved with the Schur complement (an exact structure, not a size class) is stored
in the executable cache and loaded by a new process: JAX's trace count there is 0 and the
result is bit-identical to the first process's."""

from ._workers import run_worker, trace_counter

_WORKER = r"""
import hashlib, json, sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import jaxgraph
from jaxgraph.io.bal import bundle_problem, quaternion_from_angle_axis
from jaxgraph.io.synthetic import synthetic_bal
""" + trace_counter('_dispatch') + r"""
jaxgraph.enable_compilation_cache(sys.argv[1])
d = synthetic_bal(5, 60, seed=1)
cams = np.concatenate([quaternion_from_angle_axis(d["cameras_init"][:, :3]), d["cameras_init"][:, 3:]], 1)
problem, values = bundle_problem(cams, d["points_init"], d["camera_index"], d["point_index"], d["observations"])
assert problem.structure.schur_groups() == ("points",)
out, info = jaxgraph.solve(problem, values, diagonal_damping=True)
print("RESULT " + json.dumps({"traced": len(traces), "cost": float(info.cost), "converged": bool(info.converged),
                              "digest": hashlib.sha256(np.asarray(out["points"]).tobytes()).hexdigest()}))
"""


def test_a_new_process_loads_a_schur_solve(tmp_path):
    first = run_worker(_WORKER, tmp_path / "cache")
    assert first["traced"] >= 1 and first["converged"]
    second = run_worker(_WORKER, tmp_path / "cache")
    assert second["traced"] == 0, "the new process traced the Schur solve instead of loading it"
    assert second["digest"] == first["digest"] and second["cost"] == first["cost"]
