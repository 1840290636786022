"""Catalog entries (Foundry's shape) and resolving an alias to the best variant for live workers.

Entries come from `models.json` beside this file, then from every `*.json` file (a list of
entries) in the user's catalog folder (`LADLE_CATALOG_DIR`); a user entry with the same `name`
replaces the shipped one. An entry's `displayName` is its folder name in the model directory.

Ladle's own optional fields: `revision` pins the hub revision a pull fetches (a branch, tag or
commit; else the URI's, else main), `ignore` lists glob patterns of repository files a pull skips
(besides `.azDownload-*`, always skipped), `build` asks for a build on pull. An entry that does not
validate is kept aside as broken: naming it in a pull is a 400 `invalid_catalog_entry`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

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
    revision: str | None = None
    ignore: list[str] | None = None

    @property
    def provider(self) -> str:
        return PROVIDER_PREFERENCE.get(self.runtime.executionProvider, self.runtime.executionProvider)


def load_catalog(user_dir: Path) -> list[CatalogEntry]:
    """Shipped entries, then the user's (same `name` replaces); broken files and entries are left out."""
    return read_catalog(user_dir)[0]


def read_catalog(user_dir: Path) -> tuple[list[CatalogEntry], dict[str, str]]:
    """The valid entries, and why each broken entry is broken, by each of its names (name,
    displayName, alias); a file that is not a JSON list is skipped whole, logged."""
    entries: dict[str, CatalogEntry] = {}
    broken: dict[str, str] = {}
    files = [SHIPPED, *(sorted(user_dir.glob("*.json")) if user_dir.is_dir() else [])]
    for path in files:
        try:
            raws = json.loads(path.read_text())
            if not isinstance(raws, list):
                raise ValueError("a catalog file is a JSON list of entries")
        except (ValueError, OSError) as error:
            log.warning("skipping catalog file", extra={"path": str(path), "error": str(error)})
            continue
        for raw in raws:
            try:
                entry = CatalogEntry.model_validate(raw)
            except ValidationError as error:
                names = _names(raw)
                log.warning("broken catalog entry", extra={"path": str(path), "entry": names, "error": str(error)})
                if isinstance(raw, dict) and isinstance(raw.get("name"), str):
                    entries.pop(raw["name"], None)  # a broken user entry still replaces the shipped one
                for name in names:
                    broken[name] = _reason(error)
                continue
            entries[entry.name] = entry
            for name in (entry.name, entry.displayName, entry.alias):
                broken.pop(name, None)
    return list(entries.values()), broken


def dump_entry(entry: CatalogEntry) -> dict:
    """An entry as listed: the fields it was given (Ladle's optional ones only when set)."""
    return entry.model_dump(exclude_unset=True)


def _names(raw: object) -> list[str]:
    if not isinstance(raw, dict):
        return []
    return [raw[key] for key in ("name", "displayName", "alias") if isinstance(raw.get(key), str)]


def _reason(error: ValidationError) -> str:
    """The validation errors as `field: message` pairs."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in error.errors())


def best_variant(entries: list[CatalogEntry], alias: str, providers: set[str]) -> CatalogEntry | None:
    """The variant of `alias` for the best provider live workers have (CUDA before CPU)."""
    ranking = list(PROVIDER_PREFERENCE.values())
    usable = [e for e in entries if e.alias == alias and e.provider in providers]
    usable.sort(key=lambda e: ranking.index(e.provider) if e.provider in ranking else len(ranking))
    return usable[0] if usable else None
