"""Which waiting row the CPU engine admits next: interactive before batch lines, unless one aged."""

import time
from collections import deque
from types import SimpleNamespace

from worker.engines.continuous_engine import BACKGROUND_AGING_S, ContinuousBatchEngine


def waiting(name: str, background: bool, waited_s: float = 0.0) -> SimpleNamespace:
    request = SimpleNamespace(background=background)
    return SimpleNamespace(name=name, row=SimpleNamespace(request=request), queued_at=time.monotonic() - waited_s)


def admitted(*rows: SimpleNamespace) -> list[str]:
    engine = SimpleNamespace(_pending=deque(rows))
    return [ContinuousBatchEngine._next_waiting(engine).name for _ in rows]


def test_interactive_rows_go_before_batch_rows_in_arrival_order():
    rows = [waiting("b1", True), waiting("i1", False), waiting("b2", True), waiting("i2", False)]
    assert admitted(*rows) == ["i1", "i2", "b1", "b2"]


def test_a_batch_row_that_waited_too_long_goes_first():
    rows = [waiting("b-old", True, BACKGROUND_AGING_S + 1), waiting("i1", False), waiting("b-new", True)]
    assert admitted(*rows) == ["b-old", "i1", "b-new"]
