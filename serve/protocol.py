"""OpenAI-compatible request and response models (the subset this server implements).

Constraints live in the fields (``Field(ge=..., le=...)``) so FastAPI rejects bad values with a 400 envelope and
the OpenAPI schema documents them. Every string a client sends must be valid UTF-8 (a lone surrogate such as
``"\ud800"`` is a 400, not a 500 later in the tokenizer).

Fields that would change what the client gets back and that this server does not implement (``tools``,
``tool_choice``, ``functions``, ``function_call``, ``parallel_tool_calls``, ``audio``, ``modalities``,
``prediction``, ``web_search_options``, ``best_of``) are refused with a 400 naming the field, so an agent framework
is not handed plain text it takes for a tool call. Other unknown fields (``metadata``, ``store``,
``service_tier``, ...) do not change the answer and are ignored, as OpenAI clients send them.
``ignore_eos`` is a vLLM extension for benchmarks, refused unless the server allows benchmark parameters.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_serializer

MAX_N = 16
MAX_STOP = 4
MAX_STOP_CHARS = 256
MAX_TOP_LOGPROBS = 20
MAX_LOGIT_BIAS = 300  # OpenAI's limit on logit_bias entries
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
# Refused with a 400 naming the field (see the module docstring).
UNSUPPORTED = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "parallel_tool_calls",
    "audio",
    "modalities",
    "prediction",
    "web_search_options",
    "best_of",
)


def _utf8(value: str) -> str:
    """Refuse strings that cannot be encoded as UTF-8 (JSON allows lone surrogates such as \\ud800)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains a lone surrogate; strings must be valid UTF-8") from None
    return value


Text = Annotated[str, AfterValidator(_utf8)]
StopString = Annotated[str, Field(max_length=MAX_STOP_CHARS), AfterValidator(_utf8)]


class TextContentPart(BaseModel):
    type: Literal["text"]
    text: Text


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextContentPart] | None = None
    name: Text | None = Field(default=None, max_length=64)

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ResponseFormatText(BaseModel):
    type: Literal["text"]


class ResponseFormatJsonObject(BaseModel):
    type: Literal["json_object"]


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    json_schema: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormatJsonSchema(BaseModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema, Field(discriminator="type")
]


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """Fields shared by chat and text completions."""

    model: Text = Field(min_length=1, max_length=256)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=MAX_N)
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP)] | None = None
    top_k: int = Field(default=0, ge=-1, description="vLLM extension: 0 or -1 = off.")
    min_p: float = Field(default=0.0, ge=0.0, le=1.0, description="vLLM extension.")
    repetition_penalty: float = Field(default=1.0, gt=0.0, le=2.0, description="vLLM extension.")
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        default=None, max_length=MAX_LOGIT_BIAS, description="Token id (as a string) -> bias in [-100, 100]."
    )
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Text | None = Field(default=None, max_length=256)
    ignore_eos: bool = False
    # not implemented: present and not null -> 400 naming the field (GenerationService._check_common)
    tools: Any = Field(default=None, exclude=True)
    tool_choice: Any = Field(default=None, exclude=True)
    functions: Any = Field(default=None, exclude=True)
    function_call: Any = Field(default=None, exclude=True)
    parallel_tool_calls: Any = Field(default=None, exclude=True)
    audio: Any = Field(default=None, exclude=True)
    modalities: Any = Field(default=None, exclude=True)
    prediction: Any = Field(default=None, exclude=True)
    web_search_options: Any = Field(default=None, exclude=True)
    best_of: Any = Field(default=None, exclude=True)

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        return [s for s in stops if s]


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1, max_length=1024)
    max_tokens: int | None = Field(default=None, ge=1, description="Deprecated by OpenAI; max_completion_tokens wins.")
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None


class CompletionRequest(SamplingRequest):
    prompt: Text | list[int] = Field(description="Text, or token ids.")
    max_tokens: int = Field(default=16, ge=1)
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False
    suffix: Text | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobEntry(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobEntry] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _omit_role_after_first(self, handler):
        data = handler(self)
        if data.get("role") is None:
            data.pop("role", None)
        return data


class ChatChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "orpo-deploy"
    max_model_len: int | None = None
    provenance: dict[str, Any] | None = Field(default=None, description="The model folder's orpo_manifest.json.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class FeedbackRequest(BaseModel):
    """What a user says about one completion: a rating, a better answer, or which of its ``n`` choices is best.
    A rating with a choice rates that one choice (a thumbs-up/down per answer when ``n`` > 1)."""

    model_config = ConfigDict(extra="forbid")

    completion_id: Text = Field(min_length=1, max_length=160)
    rating: Literal["up", "down"] | Annotated[float, Field(ge=-1.0, le=1.0)] | None = Field(
        default=None, description="up / down, or a score in [-1, 1]."
    )
    preferred: Text | None = Field(default=None, min_length=1, max_length=32768, description="A better answer.")
    choice: int | None = Field(
        default=None, ge=0, lt=MAX_N, description="Index of the best of the n choices; with rating, the rated one."
    )


class FeedbackResponse(BaseModel):
    id: int
    object: Literal["feedback"] = "feedback"
    completion_id: str


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
