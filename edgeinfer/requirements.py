"""The runtime's third-party requirements: which OpenCV the device has, and the versions in use.

OpenCV is not a hard dependency of the distribution (see pyproject.toml): pip cannot tell the
distributions that all install ``cv2`` apart, and installing one over another breaks both. So the
check happens here, at import, with the command that fixes it.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys

from edgeinfer.errors import DependencyError

# The oldest OpenCV the test suite has run the device workflow on: Debian 12's python3-opencv.
MIN_OPENCV = (4, 6)
OPENCV_DISTRIBUTIONS = ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless",
                        "opencv-contrib-python")
INSTALL_OPENCV = ("pip install 'edgeinfer[opencv]' (headless OpenCV: devices, servers, containers), "
                  "pip install 'edgeinfer[opencv-gui]' (with windows, for camera --show), or on Debian/Ubuntu "
                  "apt install python3-opencv and a venv made with --system-site-packages")


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_opencv() -> None:
    """Return when a usable ``cv2`` is importable; raise DependencyError saying how to install one."""
    try:
        import cv2
    except ImportError as exc:
        raise DependencyError(f"edgeinfer needs OpenCV (the cv2 module); found none importable ({exc}). "
                              f"Install one: {INSTALL_OPENCV}.") from exc
    version = getattr(cv2, "__version__", "0")
    if _version_tuple(version) < MIN_OPENCV:
        raise DependencyError(f"edgeinfer needs OpenCV >= {'.'.join(map(str, MIN_OPENCV))}; found cv2 {version} "
                              f"at {getattr(cv2, '__file__', '?')}. Upgrade it: {INSTALL_OPENCV}.")


def opencv_distributions() -> list[str]:
    """The pip distributions installed here that provide cv2 (more than one overwrite each other)."""
    found = []
    for name in OPENCV_DISTRIBUTIONS:
        try:
            found.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def versions() -> dict[str, object]:
    """The versions this runtime runs with: edgeinfer, Python, numpy, OpenCV (and where from), ONNX Runtime."""
    import cv2
    import numpy as np
    import onnxruntime as ort

    from edgeinfer.version import __version__
    from edgeinfer.pipeline import resample

    return {"edgeinfer": __version__, "python": platform.python_version(), "machine": platform.machine(),
            "numpy": np.__version__, "opencv": cv2.__version__, "opencv_module": getattr(cv2, "__file__", None),
            # Empty when cv2 came from the OS (Debian's python3-opencv has no pip metadata).
            "opencv_distributions": opencv_distributions(), "onnxruntime": ort.__version__,
            "onnxruntime_distribution": _ort_distribution(),
            # The exact resampler's kernel: the C accelerator pip compiled, or numpy (same pixels, slower).
            "resample_kernel": "c" if resample.native_kernel() else "numpy", "executable": sys.executable}


def _ort_distribution() -> str | None:
    for name in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml",
                 "onnxruntime-qnn"):
        try:
            return f"{name}=={importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
