"""Import paths from before the runtime was split into tiers, kept working: ``edgeinfer.stream`` is
``edgeinfer.tools.stream``. One table; a finder on ``sys.meta_path`` resolves an old name to the module
itself (the same object, not a copy), imported only when somebody asks for it."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "edgeinfer.ops": "edgeinfer.pipeline.ops", "edgeinfer.resample": "edgeinfer.pipeline.resample",
    "edgeinfer.preprocess": "edgeinfer.pipeline.preprocess", "edgeinfer.images": "edgeinfer.pipeline.images",
    "edgeinfer.contract": "edgeinfer.pipeline.contract",
    "edgeinfer.postprocess": "edgeinfer.tasks.classification", "edgeinfer.detections": "edgeinfer.tasks.detections",
    "edgeinfer.detect": "edgeinfer.tasks.decoders", "edgeinfer.nms": "edgeinfer.tasks.nms",
    "edgeinfer.segmentation": "edgeinfer.tasks.segmentation", "edgeinfer.embedding": "edgeinfer.tasks.embedding",
    "edgeinfer.sources": "edgeinfer.importers", "edgeinfer.diagnostics": "edgeinfer.tools.check",
    "edgeinfer.bench": "edgeinfer.tools.bench", "edgeinfer.stream": "edgeinfer.tools.stream",
    "edgeinfer.fleet": "edgeinfer.tools.fleet", "edgeinfer.distributed": "edgeinfer.tools.distributed",
    "edgeinfer.reports": "edgeinfer.tools.reports", "edgeinfer.plots": "edgeinfer.tools.plots",
    "edgeinfer.files": "edgeinfer.tools.files", "edgeinfer.serve": "edgeinfer.serving.server",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):
        pass  # the real module ran when it was imported under its own name


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
