"""Reading a TOML table with checks: every problem is one line naming the file, the key and the fix.

A `Fields` wraps one table of a parsed file. Each getter checks the value's type and records the key
as known; `done()` then refuses any key nobody asked for, so a typo ("prefil") is an error rather
than a setting silently ignored. Lists of strings may be given inline or as {file = "x.txt"}, read
relative to the TOML file (one item per non-empty line).
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import WeightsteerError

REQUIRED = object()


class Fields:
    def __init__(self, table: dict, source: Path, prefix: str = ""):
        self.table, self.source, self.prefix = table, source, prefix
        self.known: set[str] = set()

    def fail(self, key: str, problem: str) -> WeightsteerError:
        return WeightsteerError(f"{self.source}: {self.prefix}{key}: {problem}")

    def has(self, key: str) -> bool:
        return key in self.table

    def raw(self, key: str, default=REQUIRED):
        self.known.add(key)
        if key not in self.table:
            if default is REQUIRED:
                raise self.fail(key, "missing; add it (see docs/behaviours.md)")
            return default
        return self.table[key]

    def text(self, key: str, default=REQUIRED, *, allow_empty: bool = False) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str) or not (value.strip() or allow_empty):
            raise self.fail(key, f"must be a non-empty string, got {json.dumps(value)[:60]}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {json.dumps(value)[:60]}")
        return value

    def texts(self, key: str, default=REQUIRED, *, min_len: int = 1) -> tuple[str, ...]:
        """A list of non-empty strings, inline or {file = "name.txt"} (one per non-empty line)."""
        value = self.raw(key, default)
        if isinstance(value, dict):
            value = self.text_file(key, value)
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.fail(key, 'must be a list of non-empty strings or {file = "name.txt"}')
        if len(value) < min_len:
            raise self.fail(key, f"needs at least {min_len} item{'s' if min_len > 1 else ''}, got {len(value)}")
        return tuple(value)

    def path(self, key: str, value: dict) -> Path:
        """The file a {file = "..."} table names, relative to the TOML file; it must exist."""
        if set(value) != {"file"} or not isinstance(value["file"], str):
            raise self.fail(key, 'a table here must be exactly {file = "name"}')
        path = (self.source.parent / value["file"]).resolve()
        if not path.is_file():
            raise self.fail(key, f"file '{value['file']}' does not exist (looked for {path})")
        return path

    def text_file(self, key: str, value: dict) -> list[str]:
        path = self.path(key, value)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise self.fail(key, f"cannot read {path} ({err})") from None
        return [line.strip() for line in lines if line.strip()]

    def sub(self, key: str) -> Fields | None:
        """The nested table at `key`, or None when it is absent."""
        value = self.raw(key, None)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        return Fields(value, self.source, f"{self.prefix}{key}.")

    def done(self) -> None:
        unknown = sorted(set(self.table) - self.known)
        if unknown:
            raise self.fail(unknown[0], f"unknown key; known keys here: {', '.join(sorted(self.known))}")
