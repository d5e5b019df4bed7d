"""The task table: what each task does after the model -- like the op table, each task exists once.

A task is one module here that fills in a :class:`~edgeinfer.tasks.base.Task` record: the spec it accepts,
the outputs it reads and how they become results (its decoders), its result type, how a result is drawn
and tabulated, its self-test, its test-time augmentation and its doctor checks. The schema, the importers,
the model, the stream, bench, serve, the doctor and the CLI ask this table; none tests a task's name.
Adding a task is a module and one line in :data:`TABLE`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from edgeinfer import spec as _spec
from edgeinfer.errors import SpecError
from edgeinfer.spec import Spec, Step
from edgeinfer.tasks import classification, detection, embedding, segmentation
from edgeinfer.tasks.base import Evidence, Result, Task, draw_text, label_size, place_labels, put_label

TABLE: dict[str, Task] = {t.name: t for t in (classification.TASK, *detection.TASKS, segmentation.TASK,
                                              embedding.TASK)}
for _task in TABLE.values():
    _spec.register_task(_task)

__all__ = ["TABLE", "Evidence", "Result", "Task", "batch_spec", "draw_text", "for_result", "get", "label_size",
           "place_labels", "put_label"]


def get(name: str) -> Task:
    try:
        return TABLE[name]
    except KeyError:
        raise SpecError(f"task {name!r} is unknown to this runtime; known: {sorted(TABLE)}.") from None


def for_result(result: Any) -> Task:
    """The task a result belongs to (by its type)."""
    for task in TABLE.values():
        if isinstance(result, task.result):
            return task
    raise TypeError(f"expected one of {sorted({t.result.__name__ for t in TABLE.values()})}, found "
                    f"{type(result).__name__}.")


def batch_spec(spec: Spec, images_hw: Sequence[tuple[int, int]]) -> Spec:
    """Ultralytics' rule for a batch: a minimal stride-aligned letterbox (``auto``) only when every image has
    the same size; otherwise the full square, so the batch stacks."""
    if len(set(images_hw)) <= 1:
        return spec
    steps = tuple(Step(s.op, {**s.params, "auto": False}) if s.op == "letterbox" else s for s in spec.steps)
    return dataclasses.replace(spec, steps=steps)
