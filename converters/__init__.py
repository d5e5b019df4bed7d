"""Workstation side: turn a PyTorch model and its training-time transform into a self-describing ONNX file.

Needs torch, torchvision and onnx (``pip install edgeinfer[export]``); the device side does not.
"""

from converters.export import ExportReport, ExportWarning, export
from converters.transforms import pixel_parity, spec_from_transform

__all__ = ["ExportReport", "ExportWarning", "export", "pixel_parity", "spec_from_transform"]
