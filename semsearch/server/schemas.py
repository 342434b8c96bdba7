"""Request bodies and query strings. Unknown fields are refused (a misspelt option must not be ignored
silently); values are checked by the library, which owns those rules."""
from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from ..validation import lone_surrogate


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*")
    @classmethod
    def valid_unicode(cls, value):
        """JSON may escape a lone surrogate (\\ud800); no tokenizer or database takes one."""
        if (found := lone_surrogate(value)) is not None:
            raise PydanticCustomError("invalid_unicode", f"holds a lone surrogate (U+{ord(found):04X}), "
                                      "which is not valid Unicode")
        return value


class EmbeddingsRequest(Body):
    input: Union[str, list[str]]
    model: str
    encoding_format: Literal["float", "base64"] | None = None  # None (some clients send null): float
    dimensions: int | None = None
    user: str | None = None  # OpenAI's client may send it; accepted and ignored
    input_type: Literal["query", "passage"] | None = None  # the model's prompt prefix, if it has one

    @field_validator("input", mode="before")
    @classmethod
    def no_token_ids(cls, value):
        """OpenAI also takes token ids (its own tokenizer's): say so, not "not a string"."""
        if isinstance(value, list) and any(isinstance(v, (int, list)) and not isinstance(v, bool) for v in value):
            raise PydanticCustomError("token_ids", "token-id arrays are not supported here; send the text")
        return value


class Ranked(Body):
    """What a ranked answer's request gives besides what it ranks by."""
    k: int | None = Field(None, description="Hits: 1 to the server's --max-k (1,000 unless set) "
                          "[default: 10, or --max-k if lower].")
    where: dict[str, Any] | None = None


class SearchRequest(Ranked):
    query: str | None = None
    queries: list[str] | None = None
    mode: str = "hybrid"
    docs: bool = False


class SimilarRequest(Ranked):
    id: str  # the stored document the others are ranked by; left out of the answer
    docs: bool = True


class Document(Body):
    text: str
    id: str | None = None
    metadata: dict[str, Any] | None = None


class AddRequest(Body):
    documents: list[Document]


class DeleteRequest(Body):
    ids: list[str] | None = None
    where: dict[str, Any] | None = None  # matched as a search's where; empty is refused


class DocumentsQuery(BaseModel):
    """The query string of GET .../documents (a page of stored documents, OpenAI's list
    paging); values are strings, so unlike a body's they are parsed, not strict."""
    model_config = ConfigDict(extra="forbid")

    limit: int | None = Field(None, description="Documents in the page: 1 to the server's --max-page "
                              "(1,000 unless set) [default: 100, or --max-page if lower].")
    after: str | None = Field(None, description="The last id of the page before: this page starts past it.")
    where: list[str] = Field([], description="KEY=VALUE (or !=, <, <=, >, >=, or a JSON object of "
                             "operators), repeatable: only the documents that match all of them, as a "
                             "search's where matches (metadata keys, source, id).")
    text: bool = Field(True, description="false: leave each document's text out (null).")
