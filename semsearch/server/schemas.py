"""Request bodies. Unknown fields are refused (a misspelt option must not be ignored
silently); values are checked by the library, which owns those rules."""
from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EmbeddingsRequest(Body):
    input: Union[str, list[str]]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None  # OpenAI's client may send it; accepted and ignored
    input_type: Literal["query", "passage"] | None = None  # the model's prompt prefix, if it has one


class SearchRequest(Body):
    query: str | None = None
    queries: list[str] | None = None
    k: int = 10
    mode: str = "hybrid"
    where: dict[str, Any] | None = None
    docs: bool = False


class Document(Body):
    text: str
    id: str | None = None
    metadata: dict[str, Any] | None = None


class AddRequest(Body):
    documents: list[Document]
