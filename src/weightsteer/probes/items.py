"""A probe's items: inline tables in the behaviour file, a JSONL file beside it, or Python dicts.

    [[probe.items]]                       or    [probe]
    question = "..."                            items = { file = "items.jsonl" }
    pos_answer = "yes"

Each row goes through the kind's own check (which names the file and the line or item of anything
wrong and returns the normalised item). An optional `id` (string or integer) names a row in results
files and keeps it paired across runs; it defaults to the row's position. Ids must be unique.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..errors import WeightsteerError
from ..jsonl import jsonl_rows

Check = Callable[[dict, str], dict]


def make_items(rows: Iterable[tuple[object, str]], check: Check, columns: tuple[str, ...]) -> list[dict]:
    """Checked items with ids, from (row, where it came from) pairs."""
    items, seen = [], set()
    for index, (row, where) in enumerate(rows):
        if not isinstance(row, dict):
            raise WeightsteerError(f"{where}: must be a table/object with {', '.join(columns)}")
        item_id = row.get("id", index)
        if not isinstance(item_id, int | str) or isinstance(item_id, bool) or item_id in seen:
            raise WeightsteerError(f"{where}: 'id' must be a unique string or integer, got {item_id!r}")
        seen.add(item_id)
        items.append({"id": item_id, **check({k: v for k, v in row.items() if k != "id"}, where)})
    if not items:
        raise WeightsteerError(f"a probe needs at least one item with {', '.join(columns)}")
    return items


def python_items(kind: str, rows: Iterable[dict], check: Check, columns: tuple[str, ...]) -> list[dict]:
    """Items given from Python (as dicts); already-numbered items pass through unchanged."""
    return make_items(((row, f"{kind} item {i}") for i, row in enumerate(rows)), check, columns)


def read_items(f, key: str, check: Check, columns: tuple[str, ...]) -> list[dict]:
    """The items of a [probe] table's `key`: inline tables or {file = "items.jsonl"}."""
    value = f.raw(key)
    if isinstance(value, dict):
        rows = list(jsonl_rows(f.path(key, value)))
    elif isinstance(value, list) and value:
        rows = [(row, f"{f.source}: {f.prefix}{key}[{i}]") for i, row in enumerate(value)]
    else:
        raise f.fail(key, f"must be a non-empty list of tables with {', '.join(columns)}, "
                          'or {file = "items.jsonl"}')
    if not rows:
        raise f.fail(key, "has no rows")
    return make_items(rows, check, columns)
