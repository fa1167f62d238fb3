"""A probe's items: inline tables in the behaviour file, or a JSONL file beside it.

    [[probe.items]]                       or    [probe]
    question = "..."                            items = { file = "items.jsonl" }
    pos_answer = "yes"

Each row goes through the kind's own check (which names the file and the line or item of anything
wrong and returns the normalised item). An optional `id` (string or integer) names a row in results
files and keeps it paired across runs; it defaults to the row's position. Ids must be unique.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from ..errors import WeightsteerError


def read_items(f, key: str, check: Callable[[dict, str], dict], columns: tuple[str, ...]) -> list[dict]:
    value = f.raw(key)
    if isinstance(value, dict):
        path = f.path(key, value)
        raw = list(_jsonl_rows(path))
    elif isinstance(value, list) and value:
        raw = [(row, f"{f.source}: {f.prefix}{key}[{i}]") for i, row in enumerate(value)]
    else:
        raise f.fail(key, f"must be a non-empty list of tables with {', '.join(columns)}, "
                          'or {file = "items.jsonl"}')
    if not raw:
        raise f.fail(key, "has no rows")
    items, seen = [], set()
    for index, (row, where) in enumerate(raw):
        if not isinstance(row, dict):
            raise WeightsteerError(f"{where}: must be a table/object with {', '.join(columns)}")
        item_id = row.get("id", index)
        if not isinstance(item_id, int | str) or isinstance(item_id, bool) or item_id in seen:
            raise WeightsteerError(f"{where}: 'id' must be a unique string or integer, got {item_id!r}")
        seen.add(item_id)
        items.append({"id": item_id, **check({k: v for k, v in row.items() if k != "id"}, where)})
    return items


def _jsonl_rows(path):
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise WeightsteerError(f"cannot read {path} ({err}): it must be UTF-8 JSONL, one object per line") from None
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line), f"{path} line {line_no}"
        except json.JSONDecodeError as err:
            raise WeightsteerError(f"{path} line {line_no} is not valid JSON ({err.msg})") from None
