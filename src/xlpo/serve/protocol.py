"""The OpenAI chat-completions request as pydantic models, and OpenAI-shaped errors.

Validation is pydantic's (strict types: `true` is no number and "1" no integer); fields xlpo does not
use (frequency_penalty, user, logprobs, ...) are accepted and ignored, as clients send them freely.
Limits that depend on the served model (max_tokens, context length) are checked by `ChatService`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_CHOICES = 16


class RequestError(ValueError):
    """A request that is answered with an error: its HTTP status, OpenAI error type and extra headers."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error",
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.kind, self.headers = status, kind, headers or {}

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.kind, "code": self.status}}


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, value):
        """Content parts: only text parts mean something to a text model; they are joined."""
        if isinstance(value, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in value):
                raise ValueError("content parts must all be text parts ({'type': 'text', 'text': ...})")
            return "".join(p["text"] for p in value)
        if not isinstance(value, str):
            raise ValueError("content must be a string or a list of text parts")
        return value


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    """POST /v1/chat/completions. None means "not given": the server's default applies."""

    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=MAX_CHOICES)
    seed: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None

    @model_validator(mode="after")
    def _consistent(self):
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        if self.messages[-1].role == "assistant":
            raise ValueError("the last message must be a user or system message")
        return self

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def validation_message(exc: ValidationError, prefix: tuple = ()) -> str:
    """The first problem of a failed validation as one line: 'messages[0].role: Input should be ...'."""
    error = exc.errors()[0]
    return describe_error(error["loc"][len(prefix):], error["msg"], error["type"])


def describe_error(loc: tuple, msg: str, kind: str) -> str:
    """One line for one pydantic/FastAPI error (loc without FastAPI's leading 'body')."""
    if kind == "json_invalid":
        return "the request body is not valid JSON"
    if not loc and kind in ("model_type", "model_attributes_type", "dict_type"):
        return "the request body must be a JSON object"
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    msg = msg.removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def parse_request(body: object) -> ChatCompletionRequest:
    """A request from a decoded JSON body, or a RequestError (400) naming the first bad field."""
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise RequestError(validation_message(exc)) from None
