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
from functools import cached_property, partial
from typing import TYPE_CHECKING

from contracts.jobs import GenerationJob
from contracts.model_directory import EMBEDDING, GENERATION, ModelDirectory
from contracts.settings import Settings
from worker.engines.continuous_engine import PREFILL_BLOCK, ContinuousBatchEngine
from worker.engines.decode_engine import DecodeEngine
from worker.engines.embedding_engine import EmbeddingEngine
from worker.engines.generation_request import GenerationRequest
from worker.engines.harmony_reasoning import HarmonyTokens, harmony_tokens
from worker.engines.reasoning import ThinkingStart, thinking_start
from worker.engines.token_grammar import GrammarTokenizer
from worker.errors import (
    JobRejected,
    logprobs_unsupported,
    model_memory_in_use,
    model_not_found,
    model_too_large,
    wrong_model_kind,
)
from worker.models.chat_tokenizer import ChatTokenizer, chat_template
from worker.models.memory_plan import MB, KvShape, MemoryPlan, kv_shape, minimum_bytes, plan_memory
from worker.models.prompts import fit_prompts, prompt_texts
from worker.onnx.decoder_graph import cache_dtype, windowed_caches
from worker.onnx.onnx_decoder import OnnxDecoder, UnsupportedGraph, ring_capacity
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
    context_length: int  # what the memory plan's key/value cache holds for one sequence
    engine: DecodeEngine
    model_context: int  # the model's own context length
    vocab_size: int

    def prepare(self, job: GenerationJob, emit) -> GenerationRequest:
        """Tokenize the job's prompts and fit them to the context; raises JobRejected."""
        outside = sorted(t for t in job.sampling.logit_bias or {} if t >= self.vocab_size)
        if outside:
            raise JobRejected.invalid(
                "logit_bias",
                f"logit_bias names token id {outside[0]}, outside the vocabulary of '{self.name}' "
                f"(ids 0 to {self.vocab_size - 1}).",
            )
        if job.logprobs is not None and not self.engine.supports_logprobs:
            raise logprobs_unsupported(self.name)
        texts = prompt_texts(self.tokenizer, self.chat_template, job)
        prompts, truncated, max_tokens = fit_prompts(
            [self.tokenizer.encode(text).tolist() for text in texts], job, self.context_length, self.model_context
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
            thinking=self.thinking(job, texts[0]),
        )

    def thinking(self, job: GenerationJob, prompt_text: str) -> ThinkingStart | HarmonyTokens | None:
        """Where a chat job's reasoning starts, when the model thinks (a harmony model: its structure
        tokens, read by id). None for raw prompts (no chat template shapes them), and for an answer a
        grammar shapes from its first token (JSON, a forced call): the model cannot think there, so
        all it writes is the answer."""
        if job.messages is None or (job.grammar is not None and job.tool_calls != "auto"):
            return None
        return self.harmony or thinking_start(self.chat_template, prompt_text)

    @cached_property
    def harmony(self) -> HarmonyTokens | None:
        """Harmony's structure tokens, when the model speaks harmony (gpt-oss)."""
        return harmony_tokens(self.chat_template, self.tokenizer.encode)


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

    With a memory budget (LADLE_MODEL_MEMORY_MB), each model is loaded with a memory plan
    (worker/models/memory_plan.py: weights, key/value cache slots and capacity, prefix cache) that
    fits what the other loaded models leave. A model whose smallest plan exceeds the budget is
    refused (400 model_too_large); one that would fit once idle models go first unloads the least
    recently used of them; if models running jobs hold the memory it needs, it is refused (409
    model_memory_in_use) rather than loaded past the budget.
    """

    def __init__(self, settings: Settings, device: str = "cpu") -> None:
        self.settings = settings
        self.device = device
        self.directory = ModelDirectory(settings.model_dir)
        self._models: dict[str, LoadedModel] = {}
        self._encoders: dict[str, EmbeddingEngine] = {}
        self._lifetimes: dict[str, Lifetime] = {}
        self._holders: Counter[str] = Counter()
        self._footprints: dict[str, int] = {}  # weight files' bytes
        self._plans: dict[str, MemoryPlan] = {}  # decoders' memory plans
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
                plan = self._make_room(name)
                self._models[name] = self._load(name, plan)
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
            self._plans.pop(name, None)
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
        """Loaded models with their TTL, estimated size and memory plan, for the heartbeat."""
        with self._lock:
            return [
                {
                    "name": n,
                    "ttl_s": self._lifetimes[n].ttl_s,
                    "footprint_mb": round(self._footprints.get(n, 0) / MB, 1),
                    **self._plan_fields(n),
                    # Rows and key/value cache in use (decoders; embedding models have none).
                    **(self._models[n].engine.stats() if n in self._models else {}),
                }
                for n in sorted(self._lifetimes)
            ]

    def _plan_fields(self, name: str) -> dict:
        plan = self._plans.get(name)
        if plan is None:
            return {}
        return {"kv_capacity_tokens": plan.kv_tokens, "memory_plan": plan.describe()}

    def _reserved(self, name: str) -> int:
        """Bytes a loaded model may take: its plan's total, or its weights (embedding models)."""
        plan = self._plans.get(name)
        return plan.total_bytes if plan is not None else self._footprints.get(name, 0)

    def _make_room(self, name: str) -> MemoryPlan | None:
        """Unload least recently used idle models until `name`'s smallest plan fits the budget, then
        plan it in what is left (a decoder's plan; None for an embedding model); lock held.

        Raises 400 model_too_large when it could never fit, 409 model_memory_in_use when models
        running jobs hold the memory."""
        weights = footprint_bytes(self.directory.path(name))
        shape = self._kv_shape(name) if self.directory.kind(name) == GENERATION else None
        budget = max(0, self.settings.model_memory_mb) * MB
        needed = minimum_bytes(weights, shape)
        if budget and needed > budget:
            log.warning(
                "model refused: larger than the memory budget",
                extra={"model": name, "needed_mb": round(needed / MB, 1), "budget_mb": self.settings.model_memory_mb},
            )
            raise model_too_large(name, round(needed / MB, 1), self.settings.model_memory_mb)

        def used() -> int:
            return sum(self._reserved(n) for n in self.loaded_names() if n != name)

        while budget and used() + needed > budget:
            others = [n for n in self.loaded_names() if n != name]
            idle = [n for n in others if self._engine(n).idle and not self._holders[n]]
            if not idle:
                log.warning(
                    "model refused: models in use hold the memory budget",
                    extra={
                        "model": name,
                        "needed_mb": round(needed / MB, 1),
                        "budget_mb": self.settings.model_memory_mb,
                    },
                )
                raise model_memory_in_use(name, round(needed / MB, 1), others, self.settings.model_memory_mb)
            victim = min(idle, key=lambda n: self._lifetimes[n].last_used if n in self._lifetimes else 0)
            log.info("unloading least recently used model for memory", extra={"model": victim, "for": name})
            self.unload(victim)
        self._footprints[name] = weights
        if self.directory.kind(name) != GENERATION:
            return None
        available = budget - used() if budget else 0
        rows, prefix = self.settings.max_batch_rows, self.settings.prefix_cache_tokens
        if shape is None:  # a decoder whose cache cannot be sized: the settings as they are
            context = self.directory.context_length(name)
            return MemoryPlan(weights, 0, max(1, rows), context, max(0, prefix), available)
        return plan_memory(shape, weights, available, rows, prefix)

    def _kv_shape(self, name: str) -> KvShape | None:
        """The decoder's key/value cache shape (genai_config, the graph's cache dtype and its windowed
        layers, each holding a ring of onnxruntime-genai's size per row), if it has one."""
        config = self.directory.genai_config(name)
        try:
            decoder = config["model"]["decoder"]
            graph = self.directory.path(name) / decoder["filename"]
            dtype = cache_dtype(graph, decoder["inputs"]["past_key_names"] % 0)
            keys = {decoder["inputs"]["past_key_names"] % i for i in range(int(decoder["num_hidden_layers"]))}
            rings = tuple(ring_capacity(config, w) for past, w in windowed_caches(graph).items() if past in keys)
            return kv_shape(config, dtype, rings)
        except (KeyError, TypeError, ValueError, OSError) as why:
            log.info("key/value cache not sized from the config", extra={"model": name, "reason": repr(why)})
            return None

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

    def _load(self, name: str, plan: MemoryPlan) -> LoadedModel:
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
                decoder = OnnxDecoder(folder, config, plan.slots, self.settings.intra_op_threads, plan.kv_tokens)
            except UnsupportedGraph as why:
                log.info(
                    "%s: continuous batching cannot drive its graph (%s); onnxruntime-genai's Generator runs it",
                    name,
                    why,
                    extra={"model": name, "reason": str(why)},
                )
            else:
                tokenizer = ChatTokenizer(folder)
                size = plan.prefix_tokens
                min_width = decoder.smallest_invariant_width() if self.settings.batch_invariant else 1
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
                    min_width,
                )
        if engine is None:
            # onnxruntime-genai's Generator (the CUDA provider, or a graph the CPU loop cannot
            # drive), in static batches.
            import onnxruntime_genai as og

            from worker.engines.generation_engine import (
                StaticBatchEngine,
                generator_min_length,
                smallest_invariant_batch,
            )

            model = og.Model(provider_config(str(folder), self.device, self.settings.intra_op_threads))
            tokenizer = og.Tokenizer(model)
            invariant = self.device == "cpu" and self.settings.batch_invariant
            min_rows = smallest_invariant_batch(model, eos_ids | {pad_id}, config) if invariant else 1
            engine = StaticBatchEngine(
                model,
                tokenizer,
                eos_ids,
                pad_id,
                plan.slots,
                self.settings.batch_window_ms / 1000,
                name,
                partial(
                    GrammarTokenizer,
                    folder / "tokenizer.json",
                    eos_ids,
                    int(genai["vocab_size"]),
                    self.settings.max_batch_rows,
                )
                if (folder / "tokenizer.json").is_file()
                else None,
                search_defaults=config.get("search", {}),
                min_rows=min_rows,
                min_length=generator_min_length(config),
            )
        self._plans[name] = plan
        log.info(
            "model loaded",
            extra={"model": name, "seconds": round(time.perf_counter() - started, 3), "memory_plan": plan.describe()},
        )
        context = int(genai["context_length"])
        return LoadedModel(
            name,
            tokenizer,
            chat_template(folder),
            min(context, plan.kv_tokens),
            engine,
            context,
            int(genai["vocab_size"]),
        )
