"""Models loaded in this worker process: each loads once and keeps one decode loop."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from contracts.jobs import GenerationJob
from contracts.model_directory import EMBEDDING, GENERATION, ModelDirectory
from contracts.settings import Settings
from worker.engines.continuous_engine import PREFILL_BLOCK, ContinuousBatchEngine
from worker.engines.decode_engine import DecodeEngine
from worker.engines.embedding_engine import EmbeddingEngine
from worker.engines.generation_request import GenerationRequest
from worker.engines.token_grammar import GrammarTokenizer
from worker.errors import logprobs_unsupported, model_not_found, wrong_model_kind
from worker.models.chat_tokenizer import ChatTokenizer, chat_template
from worker.models.prompts import fit_prompts, prompt_texts
from worker.onnx.onnx_decoder import OnnxDecoder, UnsupportedGraph
from worker.onnx.prefix_cache import PrefixCache

if TYPE_CHECKING:  # onnxruntime-genai is imported only by workers bound to a GPU
    import onnxruntime_genai as og

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready to serve: weights, tokenizer, chat template and its decode loop."""

    name: str
    tokenizer: og.Tokenizer | ChatTokenizer
    chat_template: str
    context_length: int
    engine: DecodeEngine

    def prepare(self, job: GenerationJob, emit) -> GenerationRequest:
        """Tokenize the job's prompts and fit them to the context; raises JobRejected."""
        if job.logprobs is not None and not self.engine.supports_logprobs:
            raise logprobs_unsupported(self.name)
        texts = prompt_texts(self.tokenizer, self.chat_template, job)
        prompts, truncated, max_tokens = fit_prompts(
            [self.tokenizer.encode(text).tolist() for text in texts], job, self.context_length
        )
        return GenerationRequest(
            job_id=job.job_id,
            prompts=prompts,
            truncated=truncated,
            n=job.n,
            max_tokens=max_tokens,
            stop=job.stop,
            sampling=job.sampling,
            emit=emit,
            logprobs=job.logprobs,
            prompt_logprobs=job.prompt_logprobs,
            background=job.background,
            grammar=job.grammar,
            tool_calls=job.tool_calls,
        )


def execution_providers(device: str) -> list[str]:
    """Providers a worker bound to `device` can load models with."""
    if device == "cpu":
        return ["cpu"]
    import onnxruntime_genai as og

    return ["cuda"] if og.is_cuda_available() else []


def provider_config(folder: str, device: str, intra_op_threads: int = 0) -> og.Config:
    """A model configuration bound to the worker's device (cpu, or cuda:N with device id N)."""
    import onnxruntime_genai as og

    config = og.Config(folder)
    config.clear_providers()  # no provider left means CPU
    if intra_op_threads > 0:
        options = {"intra_op_num_threads": intra_op_threads}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    if device.startswith("cuda"):
        config.append_provider("cuda")
        config.set_provider_option("cuda", "device_id", device.partition(":")[2] or "0")
    return config


@dataclass
class Lifetime:
    """How long a loaded model stays once idle: `ttl_s` seconds after its last use (None: always)."""

    ttl_s: float | None
    last_used: float

    def expired(self, now: float) -> bool:
        return self.ttl_s is not None and now - self.last_used > self.ttl_s


def footprint_bytes(folder) -> int:
    """What a model takes in memory, estimated by its weight files (*.onnx, *.onnx.data, *.data)."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".onnx", ".data"))


class ModelRegistry:
    """Loads models on first use (or on request), keeps them while used, unloads idle ones after their TTL.

    With a memory budget (LADLE_MODEL_MEMORY_MB), loading a model that would not fit first
    unloads the least recently used idle models; if the models in use leave no room, it loads
    anyway and logs that the budget is exceeded (jobs are not refused for it).
    """

    def __init__(self, settings: Settings, device: str = "cpu") -> None:
        self.settings = settings
        self.device = device
        self.directory = ModelDirectory(settings.model_dir)
        self._models: dict[str, LoadedModel] = {}
        self._encoders: dict[str, EmbeddingEngine] = {}
        self._lifetimes: dict[str, Lifetime] = {}
        self._holders: Counter[str] = Counter()
        self._footprints: dict[str, int] = {}
        # Re-entrant: loading a model may unload others to make room while holding it.
        self._lock = threading.RLock()

    @contextmanager
    def in_use(self, name: str) -> Iterator[None]:
        """Mark `name` as used by a job for the block: an unforced unload leaves it loaded."""
        with self._lock:
            self._holders[name] += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders[name] -= 1

    def get(self, name: str) -> LoadedModel:
        """The generative model `name` (404 if absent, 400 if it is an embedding model)."""
        with self._lock:
            if name not in self._models:
                self._require_kind(name, GENERATION)
                self._make_room(name)
                self._models[name] = self._load(name)
            self._touch(name)
            return self._models[name]

    def load(self, name: str, ttl_s: float | None) -> None:
        """Load `name` (whatever its kind) and keep it `ttl_s` seconds after its last use (None: always)."""
        if not self.directory.exists(name):
            raise model_not_found(name)
        self.get(name) if self.directory.kind(name) == GENERATION else self.encoder(name)
        with self._lock:
            self._lifetimes[name] = Lifetime(ttl_s, time.monotonic())

    def unload(self, name: str, force: bool = False) -> bool:
        """Unload `name` if loaded and idle (or `force`: its running jobs are cancelled)."""
        with self._lock:
            engine = self._engine(name)
            if engine is None or not (force or (engine.idle and not self._holders[name])):
                return False
            self._models.pop(name, None)
            self._encoders.pop(name, None)
            self._lifetimes.pop(name, None)
            self._footprints.pop(name, None)
        engine.stop(cancel_running=force)
        log.info("model unloaded", extra={"model": name, "forced": force})
        return True

    def unload_all(self, force: bool = False) -> list[str]:
        return [name for name in self.loaded_names() if self.unload(name, force)]

    def unload_expired(self) -> list[str]:
        """Unload idle models whose TTL has run out (the heartbeat calls this)."""
        now = time.monotonic()
        with self._lock:
            expired = [name for name, life in self._lifetimes.items() if life.expired(now)]
        return [name for name in expired if self.unload(name)]

    def describe(self) -> list[dict]:
        """Loaded models with their TTL and estimated size, for the heartbeat."""
        with self._lock:
            return [
                {
                    "name": n,
                    "ttl_s": self._lifetimes[n].ttl_s,
                    "footprint_mb": round(self._footprints.get(n, 0) / 2**20, 1),
                    # Rows and key/value cache in use (decoders; embedding models have none).
                    **(self._models[n].engine.stats() if n in self._models else {}),
                }
                for n in sorted(self._lifetimes)
            ]

    def _make_room(self, name: str) -> None:
        """Unload least recently used idle models until `name` fits the memory budget (lock held)."""
        self._footprints[name] = footprint_bytes(self.directory.path(name))
        budget = self.settings.model_memory_mb * 2**20
        if budget <= 0:
            return

        def used() -> int:
            return sum(self._footprints.get(n, 0) for n in self.loaded_names())

        while used() + self._footprints[name] > budget:
            idle = [n for n in self.loaded_names() if n != name and self._engine(n).idle and not self._holders[n]]
            if not idle:
                log.warning(
                    "memory budget exceeded; loaded models are in use",
                    extra={"model": name, "budget_mb": self.settings.model_memory_mb},
                )
                return
            victim = min(idle, key=lambda n: self._lifetimes[n].last_used if n in self._lifetimes else 0)
            log.info("unloading least recently used model for memory", extra={"model": victim, "for": name})
            self.unload(victim)

    def _touch(self, name: str) -> None:
        life = self._lifetimes.setdefault(name, Lifetime(self.settings.model_ttl_s, 0))
        life.last_used = time.monotonic()

    def _engine(self, name: str):
        model = self._models.get(name)
        return model.engine if model is not None else self._encoders.get(name)

    def encoder(self, name: str) -> EmbeddingEngine:
        """The embedding model `name` (404 if absent, 400 if it is a generative model)."""
        with self._lock:
            self._ensure_encoder(name)
            return self._encoders[name]

    def _ensure_encoder(self, name: str) -> None:
        if name not in self._encoders:
            self._require_kind(name, EMBEDDING)
            self._make_room(name)
            self._encoders[name] = EmbeddingEngine(
                self.directory.path(name),
                self.directory.embedding_config(name),
                self.settings.embedding_batch,
                self.settings.embedding_window_ms / 1000,
                self.settings.intra_op_threads,
                self.settings.embedding_runners,
            )
        self._touch(name)

    def generation_engines(self) -> list:
        """The decode loops of the loaded generative models."""
        with self._lock:
            return [model.engine for model in self._models.values()]

    def loaded_names(self) -> list[str]:
        return sorted([*self._models, *self._encoders])

    def close(self) -> None:
        for model in self._models.values():
            model.engine.stop()
        for encoder in self._encoders.values():
            encoder.stop()

    def _require_kind(self, name: str, kind: str) -> None:
        if not self.directory.exists(name):
            raise model_not_found(name)
        if self.directory.kind(name) != kind:
            raise wrong_model_kind(name, kind)

    def _load(self, name: str) -> LoadedModel:
        started = time.perf_counter()
        folder = self.directory.path(name)
        config = self.directory.genai_config(name)
        genai = config["model"]
        eos = genai["eos_token_id"]
        eos_ids = frozenset(eos if isinstance(eos, list) else [eos])
        pad_id = int(genai.get("pad_token_id", min(eos_ids)))
        engine, tokenizer = None, None
        if self.device == "cpu":
            # Ladle's own step loop over onnxruntime: continuous batching, chunked prefill.
            try:
                decoder = OnnxDecoder(folder, config, self.settings.max_batch_rows, self.settings.intra_op_threads)
            except UnsupportedGraph as why:
                log.info(
                    "%s: continuous batching cannot drive its graph (%s); onnxruntime-genai's Generator runs it",
                    name,
                    why,
                    extra={"model": name, "reason": str(why)},
                )
            else:
                tokenizer = ChatTokenizer(folder)
                size = self.settings.prefix_cache_tokens
                engine = ContinuousBatchEngine(
                    decoder,
                    tokenizer,
                    eos_ids,
                    pad_id,
                    config.get("search", {}),
                    self.settings.prefill_chunk,
                    name,
                    PrefixCache(size, PREFILL_BLOCK) if size else None,
                    partial(
                        GrammarTokenizer, folder / "tokenizer.json", eos_ids, decoder.vocab_size, decoder.cache.slots
                    ),
                )
        if engine is None:
            # onnxruntime-genai's Generator (the CUDA provider, or a graph the CPU loop cannot
            # drive), in static batches.
            import onnxruntime_genai as og

            from worker.engines.generation_engine import StaticBatchEngine

            model = og.Model(provider_config(str(folder), self.device, self.settings.intra_op_threads))
            tokenizer = og.Tokenizer(model)
            engine = StaticBatchEngine(
                model,
                tokenizer,
                eos_ids,
                pad_id,
                self.settings.max_batch_rows,
                self.settings.batch_window_ms / 1000,
                name,
                partial(
                    GrammarTokenizer,
                    folder / "tokenizer.json",
                    eos_ids,
                    int(genai["vocab_size"]),
                    self.settings.max_batch_rows,
                ),
            )
        log.info("model loaded", extra={"model": name, "seconds": round(time.perf_counter() - started, 3)})
        return LoadedModel(name, tokenizer, chat_template(folder), int(genai["context_length"]), engine)
