"""The model's input contract: how the pipeline's (N, C, H, W) float32 RGB batch is fed to the graph.

The steps always produce NCHW float32 RGB (one canonical form the ops, the bench and the doctor share). Here,
at the one place every model call goes through, it becomes what the graph takes: channels reversed for a
BGR model, NHWC for a channels-last one (Keras, TensorFlow), float16 or uint8 elements, and the values of
the model's other inputs (the original size, a scale factor) by their recorded rules. :func:`check` refuses a
spec whose contract the graph contradicts, naming both sides.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from edgeinfer.errors import ImageError, ModelError
from edgeinfer.spec import ONNX_TYPES, InputSpec

_NUMPY = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8, "int64": np.int64, "int32": np.int32}
_ONNX_EXTRA = {"float32": "tensor(float)", "float16": "tensor(float16)", "int64": "tensor(int64)",
               "int32": "tensor(int32)"}


def image_feed(inp: InputSpec, batch: np.ndarray) -> np.ndarray:
    """The image tensor the graph takes, from a (N, C, H, W) float32 RGB batch."""
    x = batch
    if inp.channel_order == "bgr" and x.shape[1] == 3:
        x = x[:, ::-1]
    if inp.layout == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    if inp.dtype == "uint8":
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)  # the steps left 0-255 values: round, as a cast would
    if inp.dtype == "float16":
        return np.ascontiguousarray(x, dtype=np.float16)
    return np.ascontiguousarray(x, dtype=np.float32)


def _extra_value(rule: str, orig: tuple[int, int], model_hw: tuple[int, int]) -> list[float]:
    (h, w), (ih, iw) = orig, model_hw
    return {"orig_hw": [h, w], "orig_wh": [w, h], "input_hw": [ih, iw], "input_wh": [iw, ih],
            "scale_hw": [ih / h, iw / w], "scale_wh": [iw / w, ih / h]}[rule]


def feeds(inp: InputSpec, batch: np.ndarray, sizes: Sequence[tuple[int, int]] | None,
          where: str = "model") -> dict[str, np.ndarray]:
    """Every input of the graph for a prepared batch; ``sizes`` are the original images' (h, w), needed by
    the extra inputs whose rule reads them."""
    if batch.ndim != 4 or batch.dtype != np.float32:
        raise ImageError(f"expected a float32 (N, C, H, W) batch, found {batch.dtype} {batch.shape}.")
    out = {inp.name: image_feed(inp, batch)}
    n, model_hw = batch.shape[0], tuple(batch.shape[2:4])
    for e in inp.extra:
        if e.rule == "constant":
            row = list(e.value)
        elif sizes is None or len(sizes) != n:
            raise ModelError(f"{where}: input {e.name!r} is the images' {e.rule.replace('_', ' ')}, so the call needs "
                             "the original image sizes; found none. Use predict()/results(), or pass infer(batch, "
                             "sizes) with the sizes prepare() returns.")
        else:
            row = None
        values = [row if row is not None else _extra_value(e.rule, hw, model_hw) for hw in (sizes or [()] * n)]
        out[e.name] = np.asarray(values, dtype=_NUMPY[e.dtype])
    return out


def check(inp: InputSpec, session: Any, where: str = "model") -> None:
    """Refuse a contract the graph contradicts: the image input's element type and channel axis, and
    every other input of the graph covered by an extra rule of the right type."""
    inputs = {i.name: i for i in session.get_inputs()}
    graph = inputs[inp.name]
    want = ONNX_TYPES[inp.dtype]
    if graph.type != want:
        raise ModelError(f"{where}: input {inp.name!r} is {graph.type} in the graph, the spec says {inp.dtype} "
                         f"({want}). Fix the spec's input.dtype (uint8 models: steps without scaling), or re-export.")
    shape = list(graph.shape)
    if len(shape) == 4:
        at = 1 if inp.layout == "NCHW" else 3
        other = 3 if at == 1 else 1
        c = shape[at]
        if isinstance(c, int) and c not in (1, 3):
            hint = (f" The graph's axis {other} is {shape[other]}: the model looks "
                    f"{'channels-last (NHWC)' if at == 1 else 'channels-first (NCHW)'}; set input.layout."
                    if shape[other] in (1, 3) else "")
            raise ModelError(f"{where}: input {inp.name!r} has shape {shape} in the graph; the spec's layout "
                             f"{inp.layout} puts the 1 or 3 channels at axis {at}, where the graph has {c}." + hint)
    rules = {e.name: e for e in inp.extra}
    for name, node in inputs.items():
        if name == inp.name:
            continue
        if name not in rules:
            raise ModelError(f"{where}: the graph has an input {name!r} ({node.type} {list(node.shape)}) the spec "
                             f"gives no value for. Add it to input.extra with a rule: one of "
                             "orig_hw, orig_wh, input_hw, input_wh, scale_hw, scale_wh, constant.")
        if node.type != _ONNX_EXTRA[rules[name].dtype]:
            raise ModelError(f"{where}: input {name!r} is {node.type} in the graph, the spec's extra rule says "
                             f"{rules[name].dtype}. Fix input.extra.")
    missing = sorted(set(rules) - set(inputs))
    if missing:
        raise ModelError(f"{where}: the spec's extra inputs {missing} are not inputs of the graph "
                         f"({sorted(inputs)}). Fix input.extra.")
