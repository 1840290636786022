"""What a loaded model's decode loop offers the worker, whichever engine runs it.

The CPU engine (worker/engines/continuous_engine.py, continuous batching over onnxruntime) and the GPU
engine (worker/engines/generation_engine.py, onnxruntime-genai Generators in static batches) both own
one thread per model and honour the same contract.
"""

from __future__ import annotations

from typing import Protocol

from worker.engines.generation_request import GenerationRequest


class DecodeEngine(Protocol):
    """One model's decode loop: takes prepared requests, reports through each request's events."""

    # Whether it computes the logprobs a request asks for (`GenerationRequest.logprobs`).
    supports_logprobs: bool

    def submit(self, request: GenerationRequest) -> None:
        """Queue `request`; its deltas go to `request.emit`, then `result` or `error` is set and
        `request.finished` is signalled. A set `request.cancelled` ends its rows at the next step.
        Raises JobRejected (model unloaded) once the engine is stopping."""
        ...

    @property
    def idle(self) -> bool:
        """True when no request is waiting or running (the model may be unloaded)."""
        ...

    def stop(self, cancel_running: bool = False) -> None:
        """Stop the loop: requests not started fail (model unloaded); started ones finish, or are
        cancelled when `cancel_running`. Returns once the loop's thread has ended."""
        ...
