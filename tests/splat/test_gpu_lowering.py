"""Issue 26's programs lower for CUDA on a machine without a GPU: the pose-opt training step
and both Jacobian modes of ``splat.localize``'s solve (forward mode: the Pallas tangent kernel), traced as a GPU process traces them
(compiled Pallas kernels, not interpreted) and checked for host calls. The lowering code is
benchmarks/gpu_compile.py's (which also compiles the kernels with Triton); here at small
sizes and without Triton."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_compile():
    spec = importlib.util.spec_from_file_location("gpu_compile", ROOT / "benchmarks" / "gpu_compile.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def lowered_kernels(gpu_compile, lower):
    """(kernel names in lowering order, custom-call targets, host targets, lowered text)."""
    irs, _, text = gpu_compile.lower_kernels(lower)
    targets = gpu_compile.custom_call_targets(text)
    return ([gpu_compile.kernel_name(ir) for ir in irs], targets,
            gpu_compile.host_targets(targets), text)


def test_pose_opt_training_step_lowers_for_cuda(gpu_compile):
    lowered = []

    def lower():
        lowered.append(gpu_compile.lower_train_step_pose_opt(downscale=4, capacity=640))
        return lowered[0]

    kernels, targets, host, _ = lowered_kernels(gpu_compile, lower)
    # the step that was lowered carries the pose corrections: one tangent per training view
    # of the demo scene (14)
    assert lowered[0].args_info[0][0].pose["delta"].shape == (14, 6)
    assert kernels == ["_forward_kernel", "_backward_kernel"]
    assert targets == [gpu_compile.TRITON_TARGET] and not host


@pytest.mark.parametrize("jacobian,kernels", [
    # the vjp's render (the residual's image too) and its (vmapped) backward pass
    ("reverse", ["_forward_kernel", "_backward_kernel"]),
    # the jvp's render (the residual's image too) and the tangent kernel carrying all 6
    # tangents at once (one kernel, not six: the vmap over tangents goes to its batching rule)
    ("forward", ["_forward_kernel", "_tangent_kernel"])])
def test_localize_solve_lowers_for_cuda_without_host_calls(gpu_compile, jacobian, kernels):
    got, targets, host, text = lowered_kernels(
        gpu_compile, lambda: gpu_compile.lower_localize(jacobian, downscale=4, n_gaussians=300))
    assert got == kernels
    assert not host, host  # linear_solver="cholesky": no CPU-only solver in the program
    assert gpu_compile.TRITON_TARGET in targets
    assert "stablehlo.while" in text  # the LM loop is inside the one program
