"""Imported as `sitecustomize` by one worker of a chaos run only (its PYTHONPATH starts here).

Its wall clock, as Python reads it, runs ahead by the seconds written in the file that
CHAOS_CLOCK_OFFSET_FILE names (read again at most every 0.2 s), so the harness can step it while
the worker runs. `time.time` and `time.time_ns` are replaced before any module binds them (kombu
does `from time import time`); `time.monotonic` is left alone, as a real step of the wall clock
(NTP, a host's clock set by hand) leaves it. libfaketime is not used: with it, Python's timed
waits (`threading.Event.wait`) never return, or `time.sleep` fails with EINVAL when only the wall
clock is faked.
"""

import os
import time

_PATH = os.environ.get("CHAOS_CLOCK_OFFSET_FILE")
_READ_EVERY_S = 0.2

if _PATH:
    _real_time, _real_time_ns, _real_monotonic = time.time, time.time_ns, time.monotonic
    _offset = [0.0, float("-inf")]  # seconds ahead, and when (monotonic) the file was read

    def _seconds_ahead() -> float:
        now = _real_monotonic()
        if now - _offset[1] > _READ_EVERY_S:
            try:
                with open(_PATH, encoding="utf-8") as file:
                    _offset[0] = float(file.read().strip() or 0)
            except (OSError, ValueError):
                pass  # keep the last offset read
            _offset[1] = now
        return _offset[0]

    def _time() -> float:
        return _real_time() + _seconds_ahead()

    def _time_ns() -> int:
        return _real_time_ns() + int(_seconds_ahead() * 1e9)

    time.time = _time
    time.time_ns = _time_ns
