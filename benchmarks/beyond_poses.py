"""Problems with more than poses: jaxgraph vs GTSAM 4.3.0 vs Ceres (through pyceres).

Problems (``--only NAME``, repeatable; default all):

=============================== ==============================================================
victoriaPark                    ../shared/data/landmarks/victoriaPark_reduced_1k.g2o: 2D poses
                                and bearing-range sightings of tree landmarks
known_landmark_localization_20  ../shared/data/landmarks/known_landmark_localization_20.g2o: 3D
                                poses and bearing-range sightings of 4 points
dubrovnik                       ../shared/data/bundle_adjustment/dubrovnik-3-7-pre.txt (BAL)
balbianello                     ../shared/data/bundle_adjustment/Balbianello.out (Bundler v0.3)
vo_large                        ../shared/data/bundle_adjustment/VO_*_large.txt (stereo VO)
synthetic_bal                   ``jaxgraph.io.synthetic.synthetic_bal()`` (40 cameras, 8000
                                points, 33,511 observations; ``--quick``: 12 cameras, 1000
                                points) written as a BAL file that every solver reads
=============================== ==============================================================

Set-ups (the same problem for every solver where the solver can express it):

* GTSAM (Python wheel, single-threaded: the wheel has no TBB), ``LevenbergMarquardtParams()``
  defaults unless noted. victoriaPark: ``LANDMARK2`` renamed ``LANDMARK`` in a temporary copy
  (``gtsam.readG2o`` drops ``LANDMARK2``; it reads ``LANDMARK`` as bearing-range factors), a
  prior on pose 0 with sigma 1e-6. known_landmark_localization_20: ``readG2o(path, True)``
  (bearing-range factors) and priors with sigma 1e-6 on the 4 landmarks. dubrovnik
  (``SfmData.FromBalFile``, maxIterations 5000) and balbianello
  (``SfmData.FromBundlerFile``): ``GeneralSFMFactor2Cal3Bundler`` (Pose3 and Cal3Bundler per
  camera, unit pixel noise) with the gauge of GTSAM's ``SFMExample_bal``: priors with sigma
  0.1 on camera 0 (pose and calibration) and on point 0. vo_large: GTSAM's
  ``StereoVOExample_large`` (``GenericStereoFactor3D``, ``Cal3_S2Stereo``, unit isotropic
  noise, landmarks started at the first sighting's camera-frame point moved to the world,
  ``NonlinearEqualityPose3`` on pose 1), with the file's rotation matrices normalised to unit
  quaternions before the solve. synthetic_bal: ``FromBalFile`` and
  ``GeneralSFMFactor2Cal3Bundler`` with no prior at all (LM's damping copes with the gauge),
  LM with and without ``diagonalDamping``. COLAMD ordering, and METIS where it matters
  (balbianello, vo_large, synthetic_bal). dubrovnik and balbianello also without the priors
  (``"priors": false``: the cost Ceres minimises). The final costs are checked against the references
  of ../shared/data/README.md (``reference_cost``, ``cost_matches_reference``: relative
  difference <= 1e-6).
* Ceres 2.2.0 (pyceres 2.6, Levenberg-Marquardt, Ceres' default tolerances, max_num_iterations
  100; 5000 for dubrovnik) on the BAL-type problems only (dubrovnik, balbianello,
  synthetic_bal), with the Snavely reprojection cost of ``benchmarks/_ceres_snavely.cpp``
  (automatic differentiation in C++, compiled at run time: :func:`build_ceres_module`) and no
  prior (the BAL problem as its file defines it): SPARSE_SCHUR (SuiteSparse) with 1 and 2
  threads, DENSE_SCHUR and ITERATIVE_SCHUR (Jacobi preconditioner) with 1 thread. Ceres'
  cost is 0.5 sum r^2, GTSAM's ``graph.error``. Problem set-up (one ``add_residual_block``
  call per observation, from Python) is reported apart and not timed.
* jaxgraph: :func:`run_ours` (read with ``jaxgraph.io``'s readers, solved with
  ``jaxgraph.solve``, float64, LM with GTSAM's defaults, ``max_iterations`` 400; 10000 for
  dubrovnik; on synthetic_bal also with diagonal damping).

dubrovnik-3-7 (3 cameras with free intrinsics, 7 points, 19 observations: 48 unknowns, 38
residuals) has a zero-cost continuum of exact fits without priors: the solvers stop at
different points of it (Ceres, with its tighter tolerances, near 1e-19), so its prior-free
costs do not compare; it is in the set as GTSAM's reference problem.

Because priors differ (GTSAM's examples add some, Ceres none), every BAL-type result is also
scored by one independent function of the parent process: ``reprojection_cost`` = 0.5 sum of
squared pixel residuals of the Snavely model (``jaxgraph.io.synthetic.snavely_project``) at
the solver's final cameras and points, priors left out; each solver's final values come back
from its child process as arrays in the BAL convention.

Measurements (each solver and set-up in its own child process, ``--timeout`` seconds at most):
``solve_seconds`` = steady wall time of one solve (median of ``--repeats`` after up to 3
untimed warm-up calls; more runs for sub-millisecond solves; benchmarks/posegraph.py's rules);
for GTSAM ``LevenbergMarquardtOptimizer(graph, initial, params).optimize()``, for Ceres
``pyceres.solve`` (parameters reset before each run, untimed), for ours ``jaxgraph.solve``.
``compile_seconds`` (ours) = cold compile of the optimised program,
``jaxgraph.solver.api.compile_solve`` in a new process with an empty persistent compilation
cache; ``cold_first_call_seconds`` = the first ``jaxgraph.solve`` call in another new process
with an empty cache (what a user waits for the first result: for a small problem a quick
unoptimised program while the optimised one compiles in the background, see
``jaxgraph.runtime.compile_cache.set_tiered_compilation``), with its ``cold_first_call_cost``,
and ``cold_compile_seconds`` = that less ``solve_seconds`` (the compile as the user waits
for it);
``first_call_minus_steady_seconds``; with ``--pairs N``, ``paired_steady``: N more pairs of
steady times, GTSAM's compared set-up and ours each in a new process, back to back (order
alternating), and ``ours_over_gtsam_time_paired_median`` (sub-millisecond solves vary by up
to 2x between minutes on a shared machine; a pair sees one state of it);
``warm_cache_seconds`` = ``compile_solve`` of the same problem in a second new process on the
now-warm caches. ``peak_mb`` = the child's peak resident size (``VmHWM``, imports included; the
child's ``ru_maxrss`` would include the parent's size, which Linux carries over fork and exec);
``rss_after_setup_mb`` = its resident size before the first solve. ``iterations``: GTSAM's outer iterations,
Ceres' successful + unsuccessful steps, ours ``info.iterations`` (linear solves).
Summary ratios (``ratios``): ours over GTSAM's first set-up that minimises the same cost
(COLAMD; for dubrovnik and balbianello the one without priors, as our readers add none) and
over its fastest such set-up, ours over Ceres SPARSE_SCHUR 1 thread and over its fastest set-up. The machine is shared: the load average is
recorded per problem; times compare only within one run.

Usage: python benchmarks/beyond_poses.py [--only synthetic_bal ...] [--repeats 3] [--quick]
       [--no-ceres] [--no-ours] [--timeout 600] [--out benchmarks/results/beyond_poses_cpu.json]
Ceres needs ``pip install pyceres==2.6 pybind11==3.0.1``, g++, and Ceres 2.x and Eigen 3
headers (see :func:`build_ceres_module`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import subprocess
import sys
import sysconfig
import tempfile
import time

# One OpenBLAS thread for every solver, as the jaxgraph CLI sets it (a threaded LAPACK call of a
# few hundred unknowns stalls on a busy 2-core machine); children inherit it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
BENCH = Path(__file__).resolve().parent
CACHE = BENCH / ".cache" / "ceres_snavely"  # git-ignored (benchmarks/.cache/)
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from posegraph import _CompileClock, _timed

PROBLEMS = ("victoriaPark", "known_landmark_localization_20", "dubrovnik", "balbianello", "vo_large",
            "synthetic_bal")
FILES = {
    "victoriaPark": DATA / "landmarks" / "victoriaPark_reduced_1k.g2o",
    "known_landmark_localization_20": DATA / "landmarks" / "known_landmark_localization_20.g2o",
    "dubrovnik": DATA / "bundle_adjustment" / "dubrovnik-3-7-pre.txt",
    "balbianello": DATA / "bundle_adjustment" / "Balbianello.out",
    "vo_large": DATA / "bundle_adjustment" / "VO_stereo_factors_large.txt",
}
VO_CALIBRATION = DATA / "bundle_adjustment" / "VO_calibration.txt"
VO_POSES = DATA / "bundle_adjustment" / "VO_camera_poses_large.txt"
BAL_TYPE = ("dubrovnik", "balbianello", "synthetic_bal")
# ../shared/data/README.md, GTSAM 4.3.0 LM (final graph.error)
REFERENCE_COST = {"victoriaPark": 9.134522204, "known_landmark_localization_20": 114.8644379,
                  "dubrovnik": 0.03181304864, "balbianello": 125.4001589, "vo_large": 1577.02549}
SYNTHETIC = {"num_cameras": 40, "num_points": 8000, "seed": 0}
SYNTHETIC_QUICK = {"num_cameras": 12, "num_points": 1000, "seed": 0}


def _max_iterations(name, ours=False):
    if name == "dubrovnik":
        return 10000 if ours else 5000
    return 400 if ours else 100


def _peak_mb():
    """Peak resident size of this process (``VmHWM``). Not ``ru_maxrss``: Linux carries that
    over fork and exec, so every child would report at least the parent's size (which holds JAX)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ------------------------------------------------------------------------------ BAL arrays
def read_bal_arrays(path):
    """A BAL file as arrays (double precision): ``cameras [C, 9]`` (angle-axis, t, f, k1, k2),
    ``points [P, 3]``, ``camera_index``, ``point_index``, ``observations [K, 2]``."""
    tok = Path(path).read_text().split()
    nc, npt, nobs = (int(x) for x in tok[:3])
    obs = np.array(tok[3:3 + 4 * nobs], np.float64).reshape(nobs, 4)
    rest = np.array(tok[3 + 4 * nobs:3 + 4 * nobs + 9 * nc + 3 * npt], np.float64)
    return {"cameras": rest[:9 * nc].reshape(nc, 9).copy(), "points": rest[9 * nc:].reshape(npt, 3).copy(),
            "camera_index": obs[:, 0].astype(np.int64), "point_index": obs[:, 1].astype(np.int64),
            "observations": obs[:, 2:].copy()}


def read_bundler_arrays(path):
    """A Bundler v0.3 file in the BAL convention (Bundler's camera model is the same Snavely
    model with a rotation matrix; the matrix becomes an angle-axis vector)."""
    from scipy.spatial.transform import Rotation

    lines = [ln for ln in Path(path).read_text().splitlines() if not ln.startswith("#")]
    nc, npt = (int(x) for x in lines[0].split())
    cams = np.zeros((nc, 9))
    for i in range(nc):
        b = 1 + 5 * i
        f, k1, k2 = (float(x) for x in lines[b].split())
        R = np.array([[float(x) for x in lines[b + r].split()] for r in (1, 2, 3)])
        t = np.array([float(x) for x in lines[b + 4].split()])
        cams[i] = np.concatenate([Rotation.from_matrix(R).as_rotvec(), t, [f, k1, k2]])
    pts, ci, pi, uv = np.zeros((npt, 3)), [], [], []
    line = 1 + 5 * nc
    for j in range(npt):
        pts[j] = [float(x) for x in lines[line].split()]
        views = lines[line + 2].split()
        for k in range(int(views[0])):
            c, _key, u, v = views[1 + 4 * k:5 + 4 * k]
            ci.append(int(c))
            pi.append(j)
            uv.append((float(u), float(v)))
        line += 3
    return {"cameras": cams, "points": pts, "camera_index": np.array(ci, np.int64),
            "point_index": np.array(pi, np.int64), "observations": np.array(uv, np.float64)}


def bal_arrays(name, synthetic_file):
    if name == "balbianello":
        return read_bundler_arrays(FILES[name])
    return read_bal_arrays(synthetic_file if name == "synthetic_bal" else FILES[name])


def reprojection_cost(arrays, cameras, points):
    """0.5 sum of squared Snavely reprojection residuals (no prior) at ``cameras``, ``points``."""
    from jaxgraph.io.synthetic import snavely_project

    uv, _ = snavely_project(cameras, points, arrays["camera_index"], arrays["point_index"])
    return 0.5 * float(np.sum((uv - arrays["observations"]) ** 2))


def _save_solution(path, cameras, points):
    if path:
        np.savez(path, cameras=np.asarray(cameras, np.float64), points=np.asarray(points, np.float64))


# ------------------------------------------------------------------------------ GTSAM
def gtsam_problem(name, synthetic_file, priors=True):
    """``(graph, initial, params, extra)`` for GTSAM as the module docstring describes;
    ``extra`` has ``reprojection_graph`` (the graph without priors) for BAL-type problems.
    ``priors=False``: dubrovnik and balbianello without the SFMExample_bal priors (as Ceres)."""
    import gtsam
    from gtsam.symbol_shorthand import K, L, P, X

    params = gtsam.LevenbergMarquardtParams()
    extra = {}
    if name == "victoriaPark":
        tmp = Path(tempfile.mkdtemp()) / "victoriaPark_LANDMARK.g2o"
        tmp.write_text(FILES[name].read_text().replace("LANDMARK2 ", "LANDMARK "))
        graph, initial = gtsam.readG2o(str(tmp), False)
        graph.add(gtsam.PriorFactorPose2(0, initial.atPose2(0), gtsam.noiseModel.Isotropic.Sigma(3, 1e-6)))
    elif name == "known_landmark_localization_20":
        graph, initial = gtsam.readG2o(str(FILES[name]), True)
        for key in list(initial.keys()):
            if gtsam.Symbol(key).chr() == ord("l"):
                graph.add(gtsam.PriorFactorPoint3(key, initial.atPoint3(key), gtsam.noiseModel.Isotropic.Sigma(3, 1e-6)))
    elif name in BAL_TYPE:
        if name == "balbianello":
            sfm = gtsam.SfmData.FromBundlerFile(str(FILES[name]))
        else:
            sfm = gtsam.SfmData.FromBalFile(str(synthetic_file if name == "synthetic_bal" else FILES[name]))
        graph, initial = gtsam.NonlinearFactorGraph(), gtsam.Values()
        unit = gtsam.noiseModel.Isotropic.Sigma(2, 1.0)
        for j in range(sfm.numberTracks()):
            track = sfm.track(j)
            for m in range(track.numberMeasurements()):
                i, uv = track.measurement(m)
                graph.add(gtsam.GeneralSFMFactor2Cal3Bundler(uv, unit, X(i), P(j), K(i)))
            initial.insert(P(j), track.point3())
        for i in range(sfm.numberCameras()):
            initial.insert(X(i), sfm.camera(i).pose())
            initial.insert(K(i), sfm.camera(i).calibration())
        extra["reprojection_graph"] = gtsam.NonlinearFactorGraph(graph)
        extra["sizes"] = (sfm.numberCameras(), sfm.numberTracks())
        if priors and name != "synthetic_bal":  # GTSAM's SFMExample_bal gauge
            graph.add(gtsam.PriorFactorPose3(X(0), sfm.camera(0).pose(), gtsam.noiseModel.Isotropic.Sigma(6, 0.1)))
            graph.add(gtsam.PriorFactorCal3Bundler(K(0), sfm.camera(0).calibration(),
                                                   gtsam.noiseModel.Isotropic.Sigma(3, 0.1)))
            graph.add(gtsam.PriorFactorPoint3(P(0), sfm.track(0).point3(), gtsam.noiseModel.Isotropic.Sigma(3, 0.1)))
    elif name == "vo_large":
        fx, fy, s, u0, v0, b = np.loadtxt(VO_CALIBRATION)
        calib = gtsam.Cal3_S2Stereo(fx, fy, s, u0, v0, b)
        graph, initial = gtsam.NonlinearFactorGraph(), gtsam.Values()
        for row in np.loadtxt(VO_POSES, ndmin=2):
            M = row[1:].reshape(4, 4)
            q = gtsam.Rot3(M[:3, :3]).toQuaternion()
            w, x, y, z = (v / math.sqrt(q.w() ** 2 + q.x() ** 2 + q.y() ** 2 + q.z() ** 2)
                          for v in (q.w(), q.x(), q.y(), q.z()))
            initial.insert(X(int(row[0])), gtsam.Pose3(gtsam.Rot3.Quaternion(w, x, y, z), M[:3, 3]))
        model = gtsam.noiseModel.Isotropic.Sigma(3, 1.0)
        for row in np.loadtxt(FILES[name], ndmin=2):
            x, l = int(row[0]), int(row[1])
            graph.add(gtsam.GenericStereoFactor3D(gtsam.StereoPoint2(*row[2:5]), model, X(x), L(l), calib))
            if not initial.exists(L(l)):
                initial.insert(L(l), initial.atPose3(X(x)).transformFrom(row[5:8]))
        graph.add(gtsam.NonlinearEqualityPose3(X(1), initial.atPose3(X(1))))
    else:
        raise ValueError(name)
    params.setMaxIterations(_max_iterations(name))
    return graph, initial, params, extra


def gtsam_bal_solution(values, sizes):
    """GTSAM's cameras (Pose3 camera-to-world looking down +z, Cal3Bundler) back in the BAL
    convention: the inverse of GTSAM's ``openGL2gtsam`` (R_bal = Rx(pi) wRc^T, t = -R_bal w_t)."""
    import gtsam
    from gtsam.symbol_shorthand import K, P, X

    nc, npt = sizes
    flip = np.diag([1.0, -1.0, -1.0])
    cams = np.zeros((nc, 9))
    for i in range(nc):
        pose, cal = values.atPose3(X(i)), values.atCal3Bundler(K(i))
        R = flip @ pose.rotation().matrix().T
        cams[i, :3] = gtsam.Rot3.Logmap(gtsam.Rot3(R))
        cams[i, 3:6] = -R @ pose.translation()
        cams[i, 6:] = cal.fx(), cal.k1(), cal.k2()
    pts = np.array([values.atPoint3(P(j)) for j in range(npt)])
    return cams, pts


def gtsam_worker(name, setting, repeats, synthetic_file, solution_file, budget_seconds=120.0):
    import gtsam

    t0 = time.perf_counter()
    graph, initial, params, extra = gtsam_problem(name, synthetic_file, setting.get("priors", True))
    params.setOrderingType(setting.get("ordering", "COLAMD"))
    params.setDiagonalDamping(bool(setting.get("diagonal_damping", False)))
    setup_seconds = time.perf_counter() - t0
    rss = _rss_mb()
    holder = {}

    def run():
        holder["opt"] = gtsam.LevenbergMarquardtOptimizer(graph, initial, params)
        return holder["opt"].optimize()

    result, steady, runs = _timed(run, repeats, budget_seconds)
    row = {"initial_cost": graph.error(initial), "final_cost": graph.error(result),
           "iterations": int(holder["opt"].iterations()), "solve_seconds": steady, "timed_runs": runs,
           "setup_seconds": setup_seconds, "rss_after_setup_mb": rss, "peak_mb": _peak_mb(),
           "factors": int(graph.size()), "variables": int(initial.size())}
    if "reprojection_graph" in extra:
        row["final_cost_without_priors"] = extra["reprojection_graph"].error(result)
        _save_solution(solution_file, *gtsam_bal_solution(result, extra["sizes"]))
    print(json.dumps(row))


# ------------------------------------------------------------------------------ Ceres
GLOG_SHIM = r"""// A header-only stand-in for glog: Ceres' public headers include glog/logging.h for their
// CHECKs; pyceres does not export glog's symbols, so the benchmark's module must not need them.
#pragma once
#include <cstdlib>
#include <iostream>
namespace ceres_glog_shim {
struct Message {
  explicit Message(bool fatal) : fatal(fatal) {}
  ~Message() { std::cerr << std::endl; if (fatal) std::abort(); }
  std::ostream& stream() { return std::cerr; }
  bool fatal;
};
struct Null { template <class T> Null& operator<<(const T&) { return *this; } };
}  // namespace ceres_glog_shim
#define LOG(severity) ceres_glog_shim::Message(#severity[0] == 'F').stream()
#define VLOG(n) while (false) ceres_glog_shim::Null()
#define CHECK(c) if (c) {} else ceres_glog_shim::Message(true).stream() << __FILE__ << ":" << __LINE__ << " CHECK(" #c ") failed "
#define CHECK_EQ(a, b) CHECK((a) == (b))
#define CHECK_NE(a, b) CHECK((a) != (b))
#define CHECK_LE(a, b) CHECK((a) <= (b))
#define CHECK_LT(a, b) CHECK((a) < (b))
#define CHECK_GE(a, b) CHECK((a) >= (b))
#define CHECK_GT(a, b) CHECK((a) > (b))
#define CHECK_NOTNULL(p) (p)
#define DCHECK(c) while (false) ceres_glog_shim::Null()
#define DCHECK_EQ(a, b) DCHECK(true)
#define DCHECK_NE(a, b) DCHECK(true)
#define DCHECK_LE(a, b) DCHECK(true)
#define DCHECK_LT(a, b) DCHECK(true)
#define DCHECK_GE(a, b) DCHECK(true)
#define DCHECK_GT(a, b) DCHECK(true)
"""


def _ceres_headers():
    """``(ceres_include, eigen_include)``: ``$CERES_INCLUDE_DIR`` / ``$EIGEN_INCLUDE_DIR``, else
    /usr/include or /usr/local/include (``apt-get install libceres-dev``), else Debian's
    ``libceres-dev`` and ``libeigen3-dev`` packages downloaded (``apt-get download``, nothing
    installed) and unpacked into the cache."""
    def has_ceres(d):
        return d and (Path(d) / "ceres" / "autodiff_cost_function.h").exists()

    def has_eigen(d):
        return d and (Path(d) / "Eigen" / "Core").exists()

    unpacked = CACHE / "deb" / "root" / "usr" / "include"
    ceres = next((d for d in (os.environ.get("CERES_INCLUDE_DIR"), "/usr/include", "/usr/local/include",
                              str(unpacked)) if has_ceres(d)), None)
    eigen = next((d for d in (os.environ.get("EIGEN_INCLUDE_DIR"), "/usr/include/eigen3", "/usr/local/include/eigen3",
                              str(unpacked / "eigen3")) if has_eigen(d)), None)
    if ceres and eigen:
        return ceres, eigen
    deb = CACHE / "deb"
    deb.mkdir(parents=True, exist_ok=True)
    cmd = ["apt-get", "download", "libceres-dev", "libeigen3-dev"]
    r = subprocess.run(cmd, cwd=deb, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"no Ceres/Eigen headers and `{' '.join(cmd)}` failed (run `apt-get update` first, "
                           f"or set CERES_INCLUDE_DIR and EIGEN_INCLUDE_DIR): {r.stderr.strip()[-500:]}")
    for pkg in sorted(deb.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(pkg), str(deb / "root")], check=True)
    if not (has_ceres(str(unpacked)) and has_eigen(str(unpacked / "eigen3"))):
        raise RuntimeError(f"the unpacked Debian packages in {deb} hold no Ceres/Eigen headers")
    return str(unpacked), str(unpacked / "eigen3")


def build_ceres_module():
    """Compile benchmarks/_ceres_snavely.cpp into a Python module beside pyceres; returns
    ``(folder, command)``. Kept in ``benchmarks/.cache/ceres_snavely/build-<hash>/`` (git-ignored),
    rebuilt when the source, flags, headers or pyceres/pybind11 versions change.

    pyceres' wheel links Ceres 2.2.0 statically, exports none of its symbols and ships no
    headers; the module therefore uses only header-only Ceres (AutoDiffCostFunction, Jet,
    AngleAxisRotatePoint) and defines the base class' two out-of-line members itself, and hands
    its ``ceres::CostFunction`` objects to pyceres through pybind11's shared type registry
    (pybind11 3.0.1, the version pyceres 2.6 was built with). Headers: see :func:`_ceres_headers`
    (Debian 12 has Ceres 2.1.0, whose cost_function.h is identical to 2.2.0's); glog is
    replaced by a header-only stand-in (GLOG_SHIM)."""
    import importlib.metadata as md

    import pybind11

    if not pybind11.__version__.startswith("3.0."):
        raise RuntimeError(f"pybind11 {pybind11.__version__}: pyceres 2.6 was built with pybind11 3.0.1 "
                           "(pip install pybind11==3.0.1)")
    ceres_inc, eigen_inc = _ceres_headers()
    src = BENCH / "_ceres_snavely.cpp"
    flags = ["-O3", "-march=native", "-DNDEBUG", "-std=c++17", "-shared", "-fPIC", "-fvisibility=hidden"]
    key = hashlib.sha256("\n".join([src.read_text(), GLOG_SHIM, " ".join(flags), ceres_inc, eigen_inc,
                                    md.version("pyceres"), pybind11.__version__, sys.version]).encode()).hexdigest()[:16]
    out_dir = CACHE / f"build-{key}"
    target = out_dir / ("_ceres_snavely" + sysconfig.get_config_var("EXT_SUFFIX"))
    shim = CACHE / "shim"
    cmd = [os.environ.get("CXX", "g++"), *flags, "-I", str(shim), "-I", ceres_inc, "-I", eigen_inc,
           "-I", pybind11.get_include(), "-I", sysconfig.get_paths()["include"], str(src), "-o", str(target)]
    if not target.exists():
        (shim / "glog").mkdir(parents=True, exist_ok=True)
        (shim / "glog" / "logging.h").write_text(GLOG_SHIM)
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        r = subprocess.run(cmd[:-1] + [str(tmp)], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError("compiling the Ceres cost failed:\n" + " ".join(cmd) + "\n" + r.stderr[-3000:])
        tmp.replace(target)
    return out_dir, cmd


CERES_SETTINGS = [
    {"linear_solver": "SPARSE_SCHUR", "threads": 1},
    {"linear_solver": "SPARSE_SCHUR", "threads": 2},
    {"linear_solver": "DENSE_SCHUR", "threads": 1},
    {"linear_solver": "ITERATIVE_SCHUR", "threads": 1},
]


def ceres_worker(name, setting, repeats, synthetic_file, solution_file, module_dir, budget_seconds=120.0):
    sys.path.insert(0, module_dir)
    import _ceres_snavely
    import pyceres

    t0 = time.perf_counter()
    data = bal_arrays(name, synthetic_file)
    cams0, pts0 = data["cameras"], data["points"]
    cams, pts = cams0.copy(), pts0.copy()  # Ceres solves in place: reset before every run
    problem = pyceres.Problem()
    for c, p, (u, v) in zip(data["camera_index"].tolist(), data["point_index"].tolist(), data["observations"].tolist()):
        problem.add_residual_block(_ceres_snavely.snavely_cost(u, v), None, [cams[c], pts[p]])
    setup_seconds = time.perf_counter() - t0
    options = pyceres.SolverOptions()
    options.linear_solver_type = getattr(pyceres.LinearSolverType, setting["linear_solver"])
    options.num_threads = int(setting["threads"])
    options.max_num_iterations = _max_iterations(name)
    rss = _rss_mb()
    holder = {}

    def run():
        np.copyto(cams, cams0)
        np.copyto(pts, pts0)
        holder["summary"] = s = pyceres.SolverSummary()
        pyceres.solve(options, problem, s)
        return s

    s, steady, runs = _timed(run, repeats, budget_seconds)
    row = {"initial_cost": s.initial_cost, "final_cost": s.final_cost,
           "iterations": int(s.num_successful_steps + s.num_unsuccessful_steps),
           "successful_steps": int(s.num_successful_steps), "termination": str(s.termination_type),
           "solve_seconds": steady, "timed_runs": runs, "ceres_total_seconds": s.total_time_in_seconds,
           "ceres_preprocessor_seconds": s.preprocessor_time_in_seconds,
           "ceres_linear_solver_seconds": s.linear_solver_time_in_seconds,
           "ceres_jacobian_seconds": s.jacobian_evaluation_time_in_seconds,
           "threads_used": int(s.num_threads_used), "setup_seconds": setup_seconds,
           "rss_after_setup_mb": rss, "peak_mb": _peak_mb(), "residual_blocks": int(problem.num_residual_blocks())}
    _save_solution(solution_file, cams, pts)
    print(json.dumps(row))


# ------------------------------------------------------------------------------ ours
def load_ours(name, synthetic_file, dtype):
    """``(problem, values)`` of a problem read with ``jaxgraph.io``'s readers, with the gauge of
    the GTSAM set-up where the reader leaves one to the caller."""
    import jaxgraph

    io = jaxgraph.io
    if name == "victoriaPark":  # LANDMARK2 read as GTSAM reads LANDMARK; prior on pose 0, sigma 1e-6
        return io.read_g2o(FILES[name], dtype=dtype)
    if name == "known_landmark_localization_20":  # GTSAM's bearing-range reading, priors on the landmarks
        return io.read_g2o(FILES[name], dtype=dtype, trackxyz="bearing_range", landmark_prior=1e-6)
    if name in ("dubrovnik", "synthetic_bal"):  # no prior (anchor=False): the gauge is left to the damping
        return io.read_bal(synthetic_file if name == "synthetic_bal" else FILES[name], dtype=dtype)
    if name == "balbianello":
        return io.read_bundler(FILES[name], dtype=dtype)
    if name == "vo_large":  # first pose held fixed, as the example's NonlinearEquality
        return io.read_stereo_vo(FILES[name], VO_CALIBRATION, VO_POSES, dtype=dtype)
    raise ValueError(name)


def _ours_bal_solution(problem, values):
    """Our BAL-type values in the BAL convention (cameras [C, 9] with angle-axis, points [P, 3]);
    ``read_bal``'s camera rows are ``(qw, qx, qy, qz, t, f, k1, k2)``."""
    from scipy.spatial.transform import Rotation

    from jaxgraph.io.bal import bundle_arrays

    cams, pts = bundle_arrays(problem, values, "beyond_poses")[:2]
    w = Rotation.from_quat(cams[:, [1, 2, 3, 0]]).as_rotvec()
    return np.concatenate([w, cams[:, 4:]], 1), pts


# ===================================================================================== run_ours
def run_ours(problem_name, repeats=3, setting=None, phase="cold", synthetic_file=None, solution_file=None,
             budget_seconds=120.0):
    """OUR SIDE: one problem read with ``jaxgraph.io`` and solved with ``jaxgraph.solve`` in
    this (fresh) process; returns the row (as benchmarks/posegraph.py's ``ours_worker``).

    phase "cold": ``compile_solve`` with an empty persistent compilation cache (the caller sets
    ``JAX_COMPILATION_CACHE_DIR`` to a new folder), the first call, steady time (median of
    ``repeats``), final cost/iterations, peak memory; phase "warm": ``compile_solve`` of the
    same problem in a second new process on the now-warm caches.
    ``setting``: flat ``jaxgraph.solve`` settings (e.g. ``{"diagonal_damping": True}``).
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import jaxgraph
    from jaxgraph.solver.api import compile_solve

    jaxgraph.enable_compilation_cache(os.environ["JAX_COMPILATION_CACHE_DIR"])
    clock = _CompileClock()
    kw = {"max_iterations": _max_iterations(problem_name, ours=True), **(setting or {})}
    t0 = time.perf_counter()
    problem, values = load_ours(problem_name, synthetic_file, jnp.float64)
    read_seconds = time.perf_counter() - t0

    def run():
        return jax.block_until_ready(jaxgraph.solve(problem, values, **kw))

    clock.take()
    if phase == "first":  # the user's first call, compiled as jaxgraph.solve does it
        t0 = time.perf_counter()
        _, info = run()
        return {"cold_first_call_seconds": time.perf_counter() - t0, "cold_first_call_cost": float(info.cost)}
    t0 = time.perf_counter()
    compile_solve(problem, values, **kw)
    compile_seconds, split = time.perf_counter() - t0, clock.take()
    if phase == "warm":
        return {"warm_cache_seconds": compile_seconds, "warm_cache_split": split}
    rss = _rss_mb()
    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    (out, info), steady, runs = _timed(run, repeats, budget_seconds)
    row = {"initial_cost": float(info.initial_cost), "final_cost": float(info.cost),
           "iterations": int(info.iterations), "accepted_steps": int(info.accepted_steps),
           "converged": bool(info.converged), "status": int(info.status),
           "solve_seconds": steady, "timed_runs": runs, "compile_seconds": compile_seconds, "compile_split": split,
           "first_call_minus_steady_seconds": max(first - steady, 0.0), "read_seconds": read_seconds,
           "rss_after_setup_mb": rss, "peak_mb": _peak_mb(),
           "factor_groups": {g.name: int(g.count) for g in problem.factors}}
    if problem_name in BAL_TYPE:
        _save_solution(solution_file, *_ours_bal_solution(problem, out))
    return row


# ------------------------------------------------------------------------------ parent
def _child(args, timeout, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    try:
        r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout, env=env,
                           check=False)
    except subprocess.TimeoutExpired:
        return {"skipped": f"exceeded the {timeout:.0f} s cap"}
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["?"])[-1][:500]
        return {"skipped": f"failed (exit {r.returncode}): {tail}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _run_peer(kind, name, setting, args, synthetic_file, tmp, module_dir=None, env=None):
    label = kind + ":" + ",".join(f"{k}={v}" for k, v in setting.items())
    sol = Path(tmp) / (hashlib.sha1(f"{name}{label}".encode()).hexdigest()[:12] + ".npz")
    cmd = ["--worker", kind, "--problem", name, "--setting", json.dumps(setting), "--repeats", str(args.repeats),
           "--synthetic-file", str(synthetic_file or ""), "--solution-file", str(sol)]
    if module_dir:
        cmd += ["--module-dir", str(module_dir)]
    row = _child(cmd, args.timeout, env)
    row["setting"] = setting
    return row, sol


def _score(row, sol, arrays):
    if arrays is not None and sol.exists():
        z = np.load(sol)
        row["reprojection_cost"] = reprojection_cost(arrays, z["cameras"], z["points"])


def run_problem(name, args, synthetic_file, module, tmp):
    arrays = bal_arrays(name, synthetic_file) if name in BAL_TYPE else None
    out = {"problem": name, "load_average_1min": os.getloadavg()[0], "gtsam": [], "ceres": [], "jaxgraph": []}
    gt_settings = [{"ordering": "COLAMD"}]
    if name in ("balbianello", "vo_large", "synthetic_bal"):
        gt_settings.append({"ordering": "METIS"})
    if name == "synthetic_bal":
        gt_settings.append({"ordering": "COLAMD", "diagonal_damping": True})
    if name in ("dubrovnik", "balbianello"):  # the same cost as Ceres'
        gt_settings.append({"ordering": "COLAMD", "priors": False})
    for s in gt_settings:
        row, sol = _run_peer("gtsam", name, s, args, synthetic_file, tmp)
        _score(row, sol, arrays)
        if name in REFERENCE_COST and "final_cost" in row and len(s) == 1:
            ref = REFERENCE_COST[name]
            row["reference_cost"] = ref
            row["cost_matches_reference"] = abs(row["final_cost"] - ref) <= 1e-6 * abs(ref) + 1e-9
        out["gtsam"].append(row)
        print(f"   gtsam {s}: {_brief(row)}", flush=True)
    if name in BAL_TYPE and not args.no_ceres:
        if isinstance(module, str):
            out["ceres"].append({"skipped": module})
        else:
            for s in CERES_SETTINGS:
                row, sol = _run_peer("ceres", name, s, args, synthetic_file, tmp, module_dir=module)
                _score(row, sol, arrays)
                out["ceres"].append(row)
                print(f"   ceres {s}: {_brief(row)}", flush=True)
    if not args.no_ours:
        ours_settings = [{}] + ([{"diagonal_damping": True}] if name == "synthetic_bal" else [])
        for s in ours_settings:
            with tempfile.TemporaryDirectory() as cache:
                env = {"JAX_COMPILATION_CACHE_DIR": cache}
                row, sol = _run_peer("ours", name, s, args, synthetic_file, tmp, env=env)
                if "skipped" not in row:
                    warm, _ = _run_peer("ours-warm", name, s, args, synthetic_file, tmp, env=env)
                    row.update({k: v for k, v in warm.items() if k != "setting"})
            if "skipped" not in row:
                with tempfile.TemporaryDirectory() as cache:
                    first, _ = _run_peer("ours-first", name, s, args, synthetic_file, tmp,
                                         env={"JAX_COMPILATION_CACHE_DIR": cache})
                    if "skipped" in first:  # said in the row, the cold-phase numbers stay
                        row["cold_first_call_skipped"] = first["skipped"]
                    else:
                        row.update({k: v for k, v in first.items() if k != "setting"})
                        # the cold compile as the user sees it: time to the first result beyond a solve
                        row["cold_compile_seconds"] = max(row["cold_first_call_seconds"] - row["solve_seconds"], 0.0)
            _score(row, sol, arrays)
            out["jaxgraph"].append(row)
            print(f"   ours {s}: {_brief(row)}", flush=True)
    out["ratios"] = _ratios(out)
    if args.pairs and "ours_over_gtsam_time" in out["ratios"]:
        out["paired_steady"] = _paired(name, out["ratios"]["gtsam_setting_compared"], args, synthetic_file, tmp)
        out["ratios"]["ours_over_gtsam_time_paired_median"] = out["paired_steady"]["median_ratio"]
        print(f"   paired steady, ours / GTSAM: median {out['paired_steady']['median_ratio']:.2f} of "
              f"{[round(p['ratio'], 2) for p in out['paired_steady']['pairs']]}", flush=True)
    return out


def _paired(name, gtsam_setting, args, synthetic_file, tmp):
    """``--pairs N``: N more steady times of GTSAM's compared set-up and ours, each pair in two
    new child processes run back to back (the order alternating), so both sides of a ratio see
    the same state of a shared machine; sub-millisecond solves vary by up to 2x between
    minutes. Ours compile once (the first pair) and load the program from the cache after."""
    pairs = []
    with tempfile.TemporaryDirectory() as cache:
        for i in range(args.pairs):
            sides = {}
            for kind in (("gtsam", "ours") if i % 2 == 0 else ("ours", "gtsam")):
                setting, env = (gtsam_setting, None) if kind == "gtsam" else ({}, {"JAX_COMPILATION_CACHE_DIR": cache})
                sides[kind], _ = _run_peer(kind, name, setting, args, synthetic_file, tmp, env=env)
            if any("solve_seconds" not in r for r in sides.values()):
                pairs.append({"skipped": [r.get("skipped") for r in sides.values()]})
                continue
            g, o = sides["gtsam"]["solve_seconds"], sides["ours"]["solve_seconds"]
            pairs.append({"gtsam_seconds": g, "ours_seconds": o, "ratio": o / g, "load_average_1min": os.getloadavg()[0]})
    ratios = [p["ratio"] for p in pairs if "ratio" in p]
    return {"gtsam_setting": gtsam_setting, "pairs": pairs, "median_ratio": float(np.median(ratios)) if ratios else None,
            "median_gtsam_seconds": float(np.median([p["gtsam_seconds"] for p in pairs if "ratio" in p])) if ratios else None,
            "median_ours_seconds": float(np.median([p["ours_seconds"] for p in pairs if "ratio" in p])) if ratios else None}


def _brief(row):
    if "skipped" in row:
        return "skipped: " + row["skipped"]
    extra = f" reproj {row['reprojection_cost']:.10g}" if "reprojection_cost" in row else ""
    comp = f" compile {row['compile_seconds']:.2f} s" if "compile_seconds" in row else ""
    if "cold_first_call_seconds" in row:
        comp += f", first call {row['cold_first_call_seconds']:.2f} s"
    return (f"cost {row['final_cost']:.10g}{extra} ({row['iterations']} it) {row['solve_seconds']:.4f} s"
            f"{comp} peak {row['peak_mb']:.0f} MB")


# GTSAM's set-ups that minimise the same cost as ours: our BAL and Bundler readers add no prior
OURS_GTSAM_PRIORS = {"dubrovnik": False, "balbianello": False}


def _ratios(out):
    """Ours (first set-up) over GTSAM's set-ups of the same cost (no diagonal damping) and over
    Ceres; for synthetic_bal also ours with diagonal damping over GTSAM's."""
    priors = OURS_GTSAM_PRIORS.get(out["problem"], True)

    def ok(rows, damping=False, gauge=True):
        return [r for r in rows if "solve_seconds" in r and bool(r["setting"].get("diagonal_damping")) == damping
                and r["setting"].get("priors", True) == gauge]

    ours, gt, ce = ok(out["jaxgraph"]), ok(out["gtsam"], gauge=priors), ok(out["ceres"])
    if not ours:
        return {}
    o = ours[0]
    r = {}
    if gt:
        r["gtsam_setting_compared"] = gt[0]["setting"]
        r["ours_over_gtsam_time"] = o["solve_seconds"] / gt[0]["solve_seconds"]
        r["ours_over_gtsam_best_time"] = o["solve_seconds"] / min(g["solve_seconds"] for g in gt)
        r["ours_over_gtsam_peak_mb"] = o["peak_mb"] / gt[0]["peak_mb"]
        r["cost_rel_diff_vs_gtsam"] = (o["final_cost"] - gt[0]["final_cost"]) / abs(gt[0]["final_cost"])
    od, gd = ok(out["jaxgraph"], True), ok(out["gtsam"], True, priors)
    if od and gd:
        r["ours_diagonal_damping_over_gtsam_diagonal_damping_time"] = od[0]["solve_seconds"] / gd[0]["solve_seconds"]
        r["cost_rel_diff_diagonal_damping_vs_gtsam"] = (od[0]["final_cost"] - gd[0]["final_cost"]) / abs(gd[0]["final_cost"])
    if ce:
        r["ours_over_ceres_sparse_schur_1thread_time"] = o["solve_seconds"] / ce[0]["solve_seconds"]
        r["ours_over_ceres_best_time"] = o["solve_seconds"] / min(c["solve_seconds"] for c in ce)
        r["ours_over_ceres_peak_mb"] = o["peak_mb"] / ce[0]["peak_mb"]
        if "reprojection_cost" in o and "reprojection_cost" in ce[0]:
            oc, cc = o["reprojection_cost"], ce[0]["reprojection_cost"]
            r["reprojection_cost_ours_minus_ceres"] = oc - cc
            r["reprojection_cost_rel_diff_vs_ceres"] = (oc - cc) / max(abs(oc), abs(cc), 1e-300)
    return r


def _versions():
    import importlib.metadata as md

    v = {}
    for pkg in ("gtsam", "pyceres", "pybind11", "jax", "jaxlib"):
        try:
            v[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    try:
        v["gxx"] = subprocess.run([os.environ.get("CXX", "g++"), "--version"], capture_output=True,
                                  text=True, check=False).stdout.splitlines()[0]
    except (OSError, IndexError):
        pass
    return v


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=PROBLEMS, help="run only this problem (repeatable)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions per solver set-up (default 3)")
    ap.add_argument("--quick", action="store_true", help="smaller synthetic problem (12 cameras, 1000 points) for a smoke test")
    ap.add_argument("--timeout", type=float, default=600.0, help="cap per child process, s (default 600)")
    ap.add_argument("--pairs", type=int, default=0,
                    help="also N alternated pairs of steady GTSAM / ours runs per problem, each in new processes "
                         "(ratio = their median; default 0)")
    ap.add_argument("--no-ceres", action="store_true", help="leave Ceres out")
    ap.add_argument("--no-ours", action="store_true", help="leave jaxgraph out")
    ap.add_argument("--out", default=None, help="output JSON (default benchmarks/results/beyond_poses_cpu.json; "
                                                 "with --quick or --only: beyond_poses_cpu_smoke.json)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--problem", help=argparse.SUPPRESS)
    ap.add_argument("--setting", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--synthetic-file", default="", help=argparse.SUPPRESS)
    ap.add_argument("--solution-file", default="", help=argparse.SUPPRESS)
    ap.add_argument("--module-dir", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        setting = json.loads(args.setting)
        syn = args.synthetic_file or None
        if args.worker == "gtsam":
            gtsam_worker(args.problem, setting, args.repeats, syn, args.solution_file)
        elif args.worker == "ceres":
            ceres_worker(args.problem, setting, args.repeats, syn, args.solution_file, args.module_dir)
        else:
            phase = {"ours-warm": "warm", "ours-first": "first"}.get(args.worker, "cold")
            print(json.dumps(run_ours(args.problem, args.repeats, setting, phase, syn, args.solution_file)))
        return 0

    from _machine import machine_info

    problems = args.only or list(PROBLEMS)
    out_path = Path(args.out) if args.out else BENCH / "results" / (
        "beyond_poses_cpu_smoke.json" if (args.quick or args.only) else "beyond_poses_cpu.json")
    load_start = os.getloadavg()
    module, build_cmd = None, None
    if not args.no_ceres and any(p in BAL_TYPE for p in problems):
        try:
            t0 = time.perf_counter()
            module, build_cmd = build_ceres_module()
            print(f"Ceres cost module: {module} ({time.perf_counter() - t0:.1f} s)", flush=True)
        except Exception as e:  # noqa: BLE001  (reported in the JSON, the other solvers still run)
            module = f"Ceres module not built: {e}"
            print(module, flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_file, syn_settings = None, SYNTHETIC_QUICK if args.quick else SYNTHETIC
        syn_observations = None
        if "synthetic_bal" in problems:
            from jaxgraph.io.synthetic import synthetic_bal

            synthetic_file = Path(tmp) / "synthetic.bal"
            syn_observations = len(synthetic_bal(**syn_settings, path=synthetic_file)["camera_index"])
        for name in problems:
            print(f"== {name} (load {os.getloadavg()[0]:.1f})", flush=True)
            results.append(run_problem(name, args, synthetic_file, module, tmp))
    summary = {"load_average_at_start": load_start, "load_average_at_end": os.getloadavg()}
    for key in ("ours_over_gtsam_time", "ours_over_ceres_sparse_schur_1thread_time"):
        vals = [r["ratios"][key] for r in results if key in r["ratios"]]
        if vals:
            summary["geometric_mean_" + key] = math.exp(sum(math.log(v) for v in vals) / len(vals))
    refs = [g["cost_matches_reference"] for r in results for g in r["gtsam"] if "cost_matches_reference" in g]
    summary["gtsam_costs_match_references"] = all(refs) if refs else None
    doc = {
        "benchmark": "beyond_poses",
        "machine": {**machine_info(), "load_average_1_5_15min": load_start, "versions": _versions(),
                    "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS")},
        "settings": {"repeats": args.repeats, "quick": args.quick, "pairs": args.pairs,
                     "synthetic_bal": {**syn_settings, "observations": syn_observations},
                     "ceres_build_command": build_cmd if build_cmd else module,
                     "max_iterations": {"gtsam_ceres": 100, "ours": 400, "dubrovnik": {"gtsam_ceres": 5000, "ours": 10000}}},
        "results": results,
        "summary": summary,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
