"""Catalog entries (Foundry's shape) and resolving an alias to the best variant for live workers.

Entries come from `models.json` beside this file, then from every `*.json` file (a list of
entries) in the user's catalog folder (`LADLE_CATALOG_DIR`); a user entry with the same `name`
replaces the shipped one. An entry's `displayName` is its folder name in the model directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).with_name("models.json")

# Execution provider names in entries -> Ladle's provider names; earlier is preferred.
PROVIDER_PREFERENCE = {"CUDAExecutionProvider": "cuda", "CPUExecutionProvider": "cpu"}


class PromptTemplate(BaseModel):
    assistant: str
    prompt: str


class Runtime(BaseModel):
    deviceType: str
    executionProvider: str


class CatalogEntry(BaseModel):
    """One model variant, with Foundry's fields (extra fields are kept as given)."""

    model_config = ConfigDict(extra="allow")

    name: str
    displayName: str
    providerType: str
    uri: str
    version: str
    modelType: str
    promptTemplate: PromptTemplate
    publisher: str
    task: str
    runtime: Runtime
    fileSizeMb: int
    modelSettings: dict
    alias: str
    supportsToolCalling: bool
    license: str
    licenseDescription: str
    parentModelUri: str

    @property
    def provider(self) -> str:
        return PROVIDER_PREFERENCE.get(self.runtime.executionProvider, self.runtime.executionProvider)


def load_catalog(user_dir: Path) -> list[CatalogEntry]:
    """Shipped entries, then the user's (same `name` replaces); a broken user file is skipped, logged."""
    entries = {e["name"]: CatalogEntry.model_validate(e) for e in json.loads(SHIPPED.read_text())}
    for path in sorted(user_dir.glob("*.json")) if user_dir.is_dir() else []:
        try:
            for raw in json.loads(path.read_text()):
                entry = CatalogEntry.model_validate(raw)
                entries[entry.name] = entry
        except (ValueError, TypeError) as error:
            log.warning("skipping catalog file", extra={"path": str(path), "error": str(error)})
    return list(entries.values())


def best_variant(entries: list[CatalogEntry], alias: str, providers: set[str]) -> CatalogEntry | None:
    """The variant of `alias` for the best provider live workers have (CUDA before CPU)."""
    ranking = list(PROVIDER_PREFERENCE.values())
    usable = [e for e in entries if e.alias == alias and e.provider in providers]
    usable.sort(key=lambda e: ranking.index(e.provider) if e.provider in ranking else len(ranking))
    return usable[0] if usable else None
