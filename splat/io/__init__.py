"""File formats: 3DGS PLY models, image files (PNG writing, reading via Pillow,
undistortion), and the checked readers of user files (JSON, .npz, output folders)."""

from .files import npz_array, open_npz, prepare_out_dir, read_json, require_file
from .images import distort_points, read_image, undistort_image, write_png
from .ply import GaussianPly, read_ply, write_ply

__all__ = ["GaussianPly", "read_ply", "write_ply", "read_image", "write_png",
           "undistort_image", "distort_points", "require_file", "read_json", "open_npz",
           "npz_array", "prepare_out_dir"]
