"""Request bodies and query strings. Unknown fields are refused (a misspelt option must not be ignored
silently); values are checked by the library, which owns those rules."""
from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from ..validation import lone_surrogate, where_conditions

WHERE = ('Only what matches every condition (metadata keys, source, id): an object, '
         '{"team": "ops", "year": {"$gte": 2020, "$lt": 2024}, "tag": {"$in": ["a", "b"]}} (operators $eq $ne '
         '$gt $gte $lt $lte $in $nin $exists; a list value matches by any item), or a list of the command '
         'line\'s --where strings, ["team=ops", "year>=2020"] (KEY=VALUE, or !=, <, <=, >, >=).')


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


class Filtered(Body):
    """A request with a where filter, in either of its forms (WHERE)."""
    where: dict[str, Any] | list[str] | None = Field(None, description=WHERE)

    @field_validator("where", mode="before")
    @classmethod
    def where_form(cls, value):
        """Say which two forms there are: pydantic would name only the first it tried."""
        if value is None or isinstance(value, dict) or (
                isinstance(value, list) and all(isinstance(item, str) for item in value)):
            return value
        raise PydanticCustomError("where_form", 'must be an object of conditions ({"year": {"$gte": 2020}}) '
                                  'or a list of KEY<op>VALUE strings (["year>=2020"])')

    def where_filter(self) -> dict | None:
        """The filter for the library, which checks it: a list is parsed as --where's strings are."""
        return where_conditions(self.where, "where") if isinstance(self.where, list) else self.where


class Ranked(Filtered):
    """What a ranked answer's request gives besides what it ranks by."""
    k: int | None = Field(None, description="Hits: 1 to the server's --max-k (1,000 unless set) "
                          "[default: 10, or --max-k if lower].")


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


class DeleteRequest(Filtered):
    ids: list[str] | None = None  # or where (Filtered), matched as a search's; an empty where is refused


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
