"""edgeinfer: run a CNN trained in PyTorch on an edge device exactly as it behaved in training.

The device runtime. It imports numpy, OpenCV and ONNX Runtime only, never torch.
"""

from edgeinfer.errors import (ConversionError, DependencyError, EdgeInferError, ExportError, ImageError,
                              ModelError, RandomTransformError, SchemaVersionError, SpecError, SpecMissingError)
from edgeinfer.requirements import check_opencv

check_opencv()

from edgeinfer import _moved

_moved.install()

from edgeinfer.tasks.detections import Detections
from edgeinfer.tasks.decoders import Decoded, register_decoder, unregister_decoder
from edgeinfer.tasks.embedding import Embedding, cosine
from edgeinfer.tools.check import check
from edgeinfer.model import Model, SelfTestResult, load
from edgeinfer.tasks.classification import Prediction
from edgeinfer.pipeline.preprocess import Preprocessor
from edgeinfer.tasks.segmentation import Segmentation
from edgeinfer.spec import METADATA_KEY, SCHEMA, Decode, InputSpec, OutputSpec, Postprocess, SelfTest, Spec, Step

from edgeinfer.version import __version__  # noqa: E402

__all__ = [
    "ConversionError", "Decode", "Decoded", "DependencyError", "Detections", "EdgeInferError", "Embedding", "ExportError",
    "ImageError", "Segmentation", "cosine",
    "InputSpec", "METADATA_KEY", "Model", "ModelError", "OutputSpec", "Postprocess", "Prediction", "Preprocessor",
    "RandomTransformError", "SCHEMA", "SchemaVersionError", "SelfTest", "SelfTestResult", "Spec", "SpecError",
    "SpecMissingError", "Step", "check", "load", "register_decoder", "unregister_decoder", "__version__",
]
