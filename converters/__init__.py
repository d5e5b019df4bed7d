"""Workstation side: turn a PyTorch model and its training-time transform into a self-describing ONNX file.

Needs torch, torchvision and onnx (``pip install edgeinfer[export]``); the device side does not.
"""

from converters.attach import attach_spec, spec_for
from converters.export import (DetectorExportReport, EmbedderExportReport, ExportReport, ExportWarning,
                               SegmenterExportReport, export, export_detector, export_embedder, export_segmenter)
from converters.reference import check
from converters.transforms import pixel_parity, spec_from_transform

__all__ = ["attach_spec", "check", "spec_for", "DetectorExportReport", "ExportReport", "ExportWarning", "export",
           "export_detector", "export_embedder", "EmbedderExportReport", "export_segmenter", "SegmenterExportReport",
           "pixel_parity", "spec_from_transform"]
