"""The command's inputs: numbers as the factorization command always took them, JSON for any type."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

JSON_SAFE_INT = 2**53  # larger numbers go as digit strings, which every JSON parser keeps exact


class BadInput(ValueError):
    """Input the command cannot send (not JSON, not an object): a usage error."""


def json_number(token: str) -> int | str:
    """An integer that JSON keeps exact, else the text itself: the service accepts digit strings,
    and answers anything else with an invalid item that names the problem."""
    if re.fullmatch(r"[+-]?[0-9]{1,16}", token) and abs(int(token)) < JSON_SAFE_INT:
        return int(token)
    return token


def tokens(lines: Iterable[str]) -> Iterator[str]:
    """Numbers from text: one a line (blank-separated ones are fine too); `#` starts a comment."""
    for line in lines:
        yield from line.split("#", 1)[0].split()


def json_object(text: str, where: str) -> dict[str, Any]:
    """One input: a JSON object, else BadInput naming where it came from."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise BadInput(f"{where}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise BadInput(f"{where}: a JSON object is wanted, not {type(value).__name__}")
    return value


def json_lines(lines: Iterable[str], source: str) -> Iterator[dict[str, Any]]:
    """One input per non-blank line (JSON Lines)."""
    for number, line in enumerate(lines, 1):
        if line.strip():
            yield json_object(line, f"{source} line {number}")


FILE_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.+)$")


def file_fields(entries: list[str]) -> tuple[dict[str, str], list[str]]:
    """`--file` values split into file fields (`image=digit.png`: uploaded, the field set to the
    upload's id) and files of numbers (anything else)."""
    fields, numbers = {}, []
    for entry in entries:
        match = FILE_FIELD.match(entry)
        if match:
            fields[match[1]] = match[2]
        else:
            numbers.append(entry)
    return fields, numbers
