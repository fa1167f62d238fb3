"""Reading a user's JSONL file row by row, each row with where it came from, for one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from .errors import WeightsteerError


def jsonl_rows(path: Path) -> Iterator[tuple[object, str]]:
    """(parsed row, "FILE line N") for every non-blank line; unreadable or invalid lines are one line."""
    try:
        # split on "\n" only: str.splitlines would also split inside a row at U+2028, U+0085 and
        # other characters JSON strings may hold unescaped (MMLU has some)
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as err:
        raise WeightsteerError(f"cannot read {path} ({err}): it must be UTF-8 JSONL, one object per line") from None
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line), f"{path} line {line_no}"
        except json.JSONDecodeError as err:
            raise WeightsteerError(f"{path} line {line_no} is not valid JSON ({err.msg})") from None
