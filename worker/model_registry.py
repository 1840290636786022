"""Models loaded in this worker process: each loads once and keeps one decode loop."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import onnxruntime_genai as og

from contracts.jobs import GenerationJob
from contracts.model_directory import ModelDirectory
from contracts.settings import Settings
from worker.errors import model_not_found
from worker.generation_engine import GenerationEngine
from worker.generation_request import GenerationRequest
from worker.prompts import fit_prompts, prompt_texts

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready to serve: weights, tokenizer, chat template and its decode loop."""

    name: str
    tokenizer: og.Tokenizer
    chat_template: str
    context_length: int
    engine: GenerationEngine

    def prepare(self, job: GenerationJob, emit) -> GenerationRequest:
        """Tokenize the job's prompts and fit them to the context; raises JobRejected."""
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
        )


def execution_providers(device: str) -> list[str]:
    """Providers a worker bound to `device` can load models with."""
    if device == "cpu":
        return ["cpu"]
    return ["cuda"] if og.is_cuda_available() else []


def provider_config(folder: str, device: str) -> og.Config:
    """A model configuration bound to the worker's device (cpu, or cuda:N with device id N)."""
    config = og.Config(folder)
    config.clear_providers()  # no provider left means CPU
    if device.startswith("cuda"):
        config.append_provider("cuda")
        config.set_provider_option("cuda", "device_id", device.partition(":")[2] or "0")
    return config


class ModelRegistry:
    """Loads models from the model directory on first use and keeps them for the process."""

    def __init__(self, settings: Settings, device: str = "cpu") -> None:
        self.settings = settings
        self.device = device
        self.directory = ModelDirectory(settings.model_dir)
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> LoadedModel:
        with self._lock:
            if name not in self._models:
                self._models[name] = self._load(name)
            return self._models[name]

    def loaded_names(self) -> list[str]:
        return sorted(self._models)

    def close(self) -> None:
        for model in self._models.values():
            model.engine.stop()

    def _load(self, name: str) -> LoadedModel:
        if not self.directory.exists(name):
            raise model_not_found(name)
        started = time.perf_counter()
        folder = self.directory.path(name)
        model = og.Model(provider_config(str(folder), self.device))
        tokenizer = og.Tokenizer(model)
        genai = self.directory.genai_config(name)["model"]
        eos = genai["eos_token_id"]
        eos_ids = frozenset(eos if isinstance(eos, list) else [eos])
        engine = GenerationEngine(
            model,
            tokenizer,
            eos_ids,
            int(genai.get("pad_token_id", min(eos_ids))),
            self.settings.max_batch_rows,
            self.settings.batch_window_ms / 1000,
            name,
        )
        log.info("model loaded", extra={"model": name, "seconds": round(time.perf_counter() - started, 3)})
        return LoadedModel(
            name, tokenizer, (folder / "chat_template.jinja").read_text(), int(genai["context_length"]), engine
        )
