"""`mtl fmt [--check] [--diff] FILES...`: the canonical layout (language/formatter.py) applied
to files, folders (every `*.mtl` below, sorted) or `-` (stdin to stdout, for editors).

Without flags a file is rewritten only when its layout changes, atomically (a temporary file
in its folder, then os.replace), and its path printed. `--check` and `--diff` write nothing:
`--check` prints each file that would change, `--diff` a unified diff of each change. Exit
codes: 0 ok; 1 a file would change under --check, or does not parse (reported as `mtl check`
reports it); 2 a file that cannot be read (missing, not UTF-8, a folder without a spec).
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ...language.diagnostics import MtlError, errors
from ...language.formatter import format_source
from ...training.runs import replace_file

OK, CHANGED_OR_INVALID, UNREADABLE = 0, 1, 2
STDIN = "-"


class Unreadable(Exception):
    """A path that names no readable spec; the message says why."""


@dataclass(frozen=True)
class Target:
    """One spec to format: its name in messages, and where it is (None: stdin)."""

    name: str
    path: Path | None


def run_fmt(paths: list[str], check: bool, diff: bool) -> int:
    """Format every spec named by `paths`; report to stdout (changed files, diffs, stdin's
    text) and stderr (errors). Returns the exit code: the worst of the files'."""
    code = OK
    for spec in _expand(paths):
        if isinstance(spec, Unreadable):
            _err(f"error: {spec}")
            code = max(code, UNREADABLE)
            continue
        code = max(code, _one(spec, check, diff))
    return code


def _expand(paths: list[str]) -> list[Target | Unreadable]:
    """The specs named by `paths`, in order: a folder stands for its `*.mtl` files at any
    depth, sorted; a path that names nothing (or a folder without a spec) is Unreadable."""
    found: list[Target | Unreadable] = []
    for given in paths:
        if given == STDIN:
            found.append(Target("<stdin>", None))
            continue
        path = Path(given)
        if path.is_dir():
            specs = sorted(p for p in path.rglob("*.mtl") if p.is_file())
            found += [Target(str(p), p) for p in specs] or \
                [Unreadable(f"{path}: a folder without .mtl files")]
        elif path.exists():
            found.append(Target(str(path), path))
        else:
            found.append(Unreadable(f"{path}: no such file or folder"))
    return found


def _one(spec: Target, check: bool, diff: bool) -> int:
    """Format one spec, and report or write it."""
    try:
        text = _read(spec)
    except Unreadable as err:
        _err(f"error: {err}")
        return UNREADABLE
    try:
        formatted = format_source(text, spec.name)
    except MtlError as err:  # as `mtl check` reports a syntax error, with the count
        n = len(errors(err.diagnostics))
        _err(err.render() + f"\n\n{spec.name}: {n} error{'s' * (n != 1)}")
        return CHANGED_OR_INVALID
    changed = formatted != text
    if diff and changed:
        _out(_unified(text, formatted, spec.name))
    if check:
        if changed and not diff:
            _out(spec.name + "\n")
        return CHANGED_OR_INVALID if changed else OK
    if diff:
        return OK
    if spec.path is None:
        _out(formatted)
    elif changed:
        _replace(spec.path, formatted)
        _out(spec.name + "\n")
    return OK


def _read(spec: Target) -> str:
    """The spec's text, decoded strictly as UTF-8 (a byte-order mark stays in the text)."""
    try:
        data = sys.stdin.buffer.read() if spec.path is None else spec.path.read_bytes()
    except OSError as err:
        raise Unreadable(f"{spec.name}: {err.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Unreadable(f"{spec.name} is not UTF-8 text (byte {err.start})") from None


def _unified(before: str, after: str, name: str) -> str:
    """A unified diff; lines are split at \\n only, as the language counts them (a CR stays
    at its line's end, a form feed inside a comment does not split it)."""
    lines = difflib.unified_diff(_lines(before), _lines(after), name, name)
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                   for line in lines)


def _lines(text: str) -> list[str]:
    parts = text.split("\n")
    out = [p + "\n" for p in parts[:-1]]
    return out + [parts[-1]] if parts[-1] else out


def _replace(path: Path, text: str) -> None:
    """Write `text` in place of the file atomically: a reader sees the old spec or the new,
    never a part. A symbolic link is followed, and the file keeps its permissions."""
    target = Path(os.path.realpath(path))
    replace_file(target, lambda f: f.write(text.encode("utf-8")),
                 mode=target.stat().st_mode & 0o7777)


def _out(text: str) -> None:
    """To stdout as UTF-8 bytes, so that stdin's CRLF comes back as CRLF on every platform."""
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.buffer.flush()


def _err(text: str) -> None:
    print(text, file=sys.stderr)
