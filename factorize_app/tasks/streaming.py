"""Streamed outputs: a handler that is a generator yields its output piece by piece.

`handle(data)` may `yield` pieces (JSON values: a token, a segment, a factor) as it makes them;
each is passed to `emit` as it comes (the worker makes it an `output` event of the job and adds
it to the job's output that polls show). The job's result is the whole: the generator's return
value if it returns one, else its pieces as the result serializer's one field
(`{"<field>": [pieces]}`, validated by it). A batch handler streams per item: `handle_batch`
yields `(index, piece)` pairs (index: the input's place in the batch) and returns the list of
results (or nothing: then each item's result is its pieces, by the same rule).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from factorize_app.tasks.registry import TaskType

# What a handler's pieces are passed to as they come: emit(piece), for a batch emit(index, piece).
Emit = Callable[[Any], None]
BatchEmit = Callable[[int, Any], None]


class StreamedResultError(ValueError):
    """A generator returned nothing, and its pieces are not a result of its type."""


def is_stream(answer: Any) -> bool:
    return inspect.isgenerator(answer)


def _run(answer: Generator, each: Callable[[Any], None]) -> Any:
    """Run the generator to its end, `each` called on every piece; its return value. A piece
    `each` refuses (raises) closes the generator, so its own cleanup runs."""
    try:
        while True:
            try:
                piece = next(answer)
            except StopIteration as stop:
                return stop.value
            each(piece)
    finally:
        answer.close()


def run_to_end(answer: Any) -> Any:
    """For code that calls a model's handle() itself (tests, the bench): a plain answer as it is,
    a generator run to its end (its pieces dropped) for its return value."""
    return _run(answer, lambda piece: None) if is_stream(answer) else answer


def drain(task_type: TaskType, answer: Generator, emit: Emit | None) -> dict[str, Any]:
    """A handler's generator run to its end, each piece passed to `emit`; the job's result."""
    pieces: list[Any] = []

    def each(piece: Any) -> None:
        pieces.append(piece)
        if emit is not None:
            emit(piece)

    returned = _run(answer, each)
    return returned if returned is not None else pieces_result(task_type, pieces)


def drain_batch(task_type: TaskType, answer: Generator, count: int, emit: BatchEmit | None) -> list[dict[str, Any]]:
    """A batch handler's generator of (index, piece) run to its end; the batch's results."""
    pieces: list[list[Any]] = [[] for _ in range(count)]

    def each(pair: Any) -> None:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], int) and 0 <= pair[0] < count):
            raise TypeError(f"handle_batch yields (index, piece) pairs, index 0..{count - 1}; it yielded {pair!r:.80}")
        pieces[pair[0]].append(pair[1])
        if emit is not None:
            emit(*pair)

    returned = _run(answer, each)
    return returned if returned is not None else [pieces_result(task_type, item) for item in pieces]


def pieces_result(task_type: TaskType, pieces: list[Any]) -> dict[str, Any]:
    """A generator's result when it returns none: `{"<the result's one field>": pieces}`,
    validated by the result serializer (StreamedResultError if it has other than one field, or
    refuses them)."""
    fields = task_type.result_fields
    if len(fields) != 1:
        raise StreamedResultError(
            f"{task_type.name}: a generator that returns nothing gives its pieces as the result, which needs a "
            f"result serializer of one field (it has {len(fields)}): return the result from the generator"
        )
    result = {fields[0]: pieces}
    serializer = task_type.result_serializer(data=result)
    if not serializer.is_valid():
        raise StreamedResultError(f"{task_type.name}: the pieces are not its result: {serializer.errors}")
    return result
