"""The chat completion request as OpenAI and Foundry Local clients send it (pydantic)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from api.chat.structured import CallMessage, FunctionCall, StructuredOutputFields
from api.sampling_protocol import SEED_MAX, SEED_MIN, SamplingFields, StrictModel
from contracts.jobs import GenerationJob

# Most alternatives per token `top_logprobs` may ask for (OpenAI's limit).
MAX_TOP_LOGPROBS = 20
# OpenAI's content part types of other modalities than text (images, audio, files).
NON_TEXT_PARTS = ("image_url", "input_audio", "file")
# OpenAI's reasoning efforts (chat's `reasoning_effort`, the Responses API's `reasoning.effort`):
# given to the chat template as `reasoning_effort`, which gpt-oss's reads; other models' ignore it.
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]


class TextPart(StrictModel):
    type: Literal["text"]
    text: str


class ChatMessage(StrictModel):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[CallMessage] | None = None
    function_call: FunctionCall | None = None  # OpenAI's deprecated form of one tool call
    refusal: str | None = None  # sent back by clients that echo an answer's message; not shown to the model

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, content: object) -> object:
        """A part of another modality is refused by name (the union's own error would say "a valid string")."""
        for index, part in enumerate(content if isinstance(content, list) else []):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in NON_TEXT_PARTS:
                raise ValueError(
                    f"part {index} is of type '{kind}', but the models Ladle serves take text only: "
                    "send the content as a string or as parts of type 'text'"
                )
        return content

    @model_validator(mode="after")
    def _tool_fields_by_role(self) -> ChatMessage:
        if (self.tool_calls or self.function_call) and self.role != "assistant":
            raise ValueError("only assistant messages may carry tool_calls or function_call")
        if self.tool_calls and self.function_call:
            raise ValueError("a message carries tool_calls or function_call, not both")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        if self.role == "function" and not self.name:
            raise ValueError("a function message needs the name of the function whose result it holds")
        return self


def job_messages(messages: list[ChatMessage]) -> list[dict]:
    """The messages as the worker takes them, with the deprecated function calls and results as the
    tool calls and tool results they stand for (so the model sees them in its own format).

    A legacy call gets the ID `call_<its message's index>`, and a function message answers the
    latest such call before it (or, with none, gets an ID of its own): stable across turns.
    """
    converted, call_id = [], None
    for index, message in enumerate(messages):
        fields = message.model_dump(exclude_none=True, exclude={"function_call"})
        if message.function_call is not None:
            call_id = f"call_{index}"
            call = {"id": call_id, "type": "function", "function": message.function_call.model_dump()}
            fields["tool_calls"] = [call]
        elif message.role == "function":
            fields["role"] = "tool"
            fields["tool_call_id"] = call_id or f"call_{index}"
        converted.append(fields)
    return converted


class ChatCompletionRequest(SamplingFields, StructuredOutputFields):
    """Every accepted field; anything else is a 400 naming it (never silently ignored)."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    random_seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)  # Foundry Local's name for seed
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    reasoning_effort: ReasoningEffort | None = None
    # No effect on output:
    metadata: dict[str, str] | None = None
    store: bool | None = None

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_need_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs is only allowed when logprobs is true")
        return value

    @model_validator(mode="after")
    def _one_seed(self) -> ChatCompletionRequest:
        if self.seed is not None and self.random_seed is not None and self.seed != self.random_seed:
            raise ValueError("seed and random_seed disagree")
        return self

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def output_limit_param(self) -> str:
        """The field `output_limit` comes from, for errors naming it."""
        return "max_completion_tokens" if self.max_completion_tokens else "max_tokens"

    def to_job(self, job_id: str) -> GenerationJob:
        return GenerationJob(
            job_id=job_id,
            model=self.model,
            messages=job_messages(self.messages),
            n=self.n,
            max_tokens=self.output_limit,
            stop=self.stop if self.free_text else [],
            sampling=self.sampling(self.random_seed if self.seed is None else self.seed),
            logprobs=(self.top_logprobs or 0) if self.logprobs else None,
            reasoning_effort=self.reasoning_effort,
            **self.structured_job_fields(),
        )
