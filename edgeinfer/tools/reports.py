"""The JSON reports edgeinfer writes (bench, parity, check, tune): their schema names, in one place.

Every report carries ``"schema": "edgeinfer.<kind>/<version>"``; the writers take their name from
:data:`SCHEMAS` and readers (the fleet comparison) refuse any other version by name instead of guessing
what its fields mean.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgeinfer.errors import SchemaVersionError

SCHEMAS = {
    "bench": "edgeinfer.bench/1",
    "parity": "edgeinfer.parity/1",
    "check": "edgeinfer.check/1",
    "tune": "edgeinfer.tune/2",
}
# earlier versions still read, by kind: their readers (the fleet comparison) map them onto the current fields.
# tune/1: ONNX Runtime only, each row judged by top-1 agreement (top1_agreement, max_abs_diff, min_agreement).
OLDER = {
    "edgeinfer.tune/1": "tune",
}


def read_report(path: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """The kind ("bench", "parity", "check", "tune") and the contents of a report file this version reads."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise SchemaVersionError(f"{p}: expected an edgeinfer JSON report, found a file that does not parse "
                                 f"({exc}).") from exc
    schema = data.get("schema") if isinstance(data, dict) else None
    for kind, name in SCHEMAS.items():
        if schema == name:
            return kind, data
    if schema in OLDER:
        return OLDER[schema], data
    known = ", ".join(SCHEMAS.values())
    if isinstance(schema, str) and schema.startswith("edgeinfer."):
        raise SchemaVersionError(f"{p}: schema {schema!r} is not one this edgeinfer reads ({known}). Rerun the "
                                 "command that wrote it with this version, or compare with the version that wrote it.")
    raise SchemaVersionError(f"{p}: expected a report with a 'schema' field ({known}), found "
                             f"{'none' if schema is None else repr(schema)}. Reports written before schemas were "
                             "recorded: rerun the bench, parity, check or tune command with --json.")
