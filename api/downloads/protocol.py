"""Foundry Local's download request body (`POST /openai/download`).

Foundry's clients spell the keys differently (`IgnorePipeReport` and `ignorePipeReport`,
`Name` and `name`), so keys are matched without regard to case, then validated strictly.
`model` is an object {Uri, Name, ProviderType, Path, PromptTemplate, Publisher} or, as in
Foundry's documentation, a catalog name or alias as a string.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from contracts.events import DownloadResult
from contracts.job_store import JobRecord


class ModelSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    Uri: str | None = None
    Name: str | None = None
    ProviderType: str | None = None
    # The folder inside the repository (a device variant, e.g. "cpu-int4-rtn-block-32").
    Path: str | None = None
    PromptTemplate: dict | None = None
    Publisher: str | None = None


class DownloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelSource | str
    token: str | None = None
    progressToken: str | None = None  # Foundry's pipe reporting; progress always comes over HTTP here
    customDirPath: str | None = None
    bufferSize: int | None = Field(None, ge=1)  # accepted for compatibility; the hub client sizes its reads
    ignorePipeReport: bool | None = None
    force: bool = False

    @classmethod
    def parse(cls, body: dict) -> DownloadRequest:
        canonical = _canonical_keys(body, cls.model_fields)
        if isinstance(canonical.get("model"), dict):
            canonical["model"] = _canonical_keys(canonical["model"], ModelSource.model_fields)
        return cls.model_validate(canonical)


def _canonical_keys(raw: dict, fields: dict) -> dict:
    """`raw` with each key spelled as the field it names regardless of case (others kept as given)."""
    by_lower = {name.lower(): name for name in fields}
    return {by_lower.get(key.lower(), key): value for key, value in raw.items()}


def job_result_body(record: JobRecord, result: DownloadResult) -> dict:
    """A finished download job's result, as GET /v1/jobs/{id} shows it."""
    return result.model_dump()
