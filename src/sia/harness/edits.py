"""Search/replace edits of a harness, applied robustly.

LLMs quote the code they want to change imperfectly: indentation shifts,
trailing spaces, a renamed variable or a reflowed line. Each SEARCH block is
located in three steps, the first that finds one place wins:

1. exactly (and only once);
2. line by line with leading and trailing whitespace ignored;
3. fuzzily: the window of as many lines with the highest `difflib` ratio,
   if it reaches `min_ratio` and no other window ties with it.

The replacement is re-indented by the difference between the quoted and the
found indentation. An edit that cannot be placed raises `EditError` naming the
best candidate, and the caller falls back to asking for the whole file.
"""

from __future__ import annotations

import difflib
import re

EDIT_RE = re.compile(r"^<{5,9} ?SEARCH[^\n]*\n(.*?)^={5,9}[ \t]*\n(.*?)^>{5,9} ?REPLACE[^\n]*$", re.S | re.M)


class EditError(ValueError):
    pass


def parse_edits(text: str) -> list[tuple[str, str]]:
    """The (search, replace) pairs of the SEARCH/REPLACE blocks in `text`."""
    return [(s, r) for s, r in EDIT_RE.findall(text)]


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _reindent(lines: list[str], quoted: str, found: str) -> list[str]:
    if quoted == found:
        return lines
    out = []
    for line in lines:
        if line.strip() and line.startswith(quoted):
            out.append(found + line[len(quoted):])
        elif line.strip() and not quoted:
            out.append(found + line)
        else:
            out.append(line)
    return out


def _splice(src_lines: list[str], start: int, n: int, search_lines: list[str], replace: str) -> str:
    rep = replace.splitlines(keepends=True)
    first_q = next((ln for ln in search_lines if ln.strip()), "")
    first_f = next((ln for ln in src_lines[start:start + n] if ln.strip()), "")
    rep = _reindent(rep, _indent(first_q), _indent(first_f))
    if rep and not rep[-1].endswith("\n") and start + n < len(src_lines):
        rep[-1] += "\n"
    return "".join(src_lines[:start] + rep + src_lines[start + n:])


def apply_edit(source: str, search: str, replace: str, min_ratio: float = 0.8) -> tuple[str, str]:
    """(new source, how it was placed: exact, whitespace or fuzzy RATIO)."""
    if not search.strip():
        raise EditError("empty SEARCH block")
    count = source.count(search)
    if count == 1:
        return source.replace(search, replace, 1), "exact"
    if count > 1:
        raise EditError(f"SEARCH text occurs {count} times; quote more lines to make it unique")
    src_lines = source.splitlines(keepends=True)
    search_lines = search.splitlines(keepends=True)
    n = len(search_lines)
    key = [ln.strip() for ln in search_lines]
    hits = [i for i in range(len(src_lines) - n + 1) if [ln.strip() for ln in src_lines[i:i + n]] == key]
    if len(hits) == 1:
        return _splice(src_lines, hits[0], n, search_lines, replace), "whitespace"
    if len(hits) > 1:
        raise EditError(f"SEARCH text occurs {len(hits)} times (ignoring whitespace); quote more lines")
    want = "\n".join(key)
    scored = []
    for size in {n - 1, n, n + 1} - {0}:
        for i in range(len(src_lines) - size + 1):
            window = "\n".join(ln.strip() for ln in src_lines[i:i + size])
            scored.append((difflib.SequenceMatcher(None, want, window, autojunk=False).ratio(), i, size))
    if not scored:
        raise EditError("the harness is shorter than the SEARCH block")
    scored.sort(reverse=True)
    best, start, size = scored[0]
    if best < min_ratio:
        raise EditError(f"SEARCH text not found (closest: line {start + 1}, similarity {best:.2f} < {min_ratio})")
    rivals = [s for s in scored[1:] if s[0] >= best - 1e-9 and abs(s[1] - start) >= n]
    if rivals:
        raise EditError(f"SEARCH text matches several places equally (lines {start + 1} and {rivals[0][1] + 1})")
    return _splice(src_lines, start, size, search_lines, replace), f"fuzzy {best:.2f}"


def apply_edits(source: str, edits: list[tuple[str, str]]) -> tuple[str, list[str]]:
    """Apply every edit in order; raises EditError naming the first that cannot be placed."""
    notes = []
    for i, (search, replace) in enumerate(edits, 1):
        try:
            source, how = apply_edit(source, search, replace)
        except EditError as e:
            raise EditError(f"edit {i}: {e}") from None
        notes.append(how)
    return source, notes
