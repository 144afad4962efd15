"""TEST FIXTURE ONLY: an in-memory search engine for argilla-server 2.8, for prefloop's test suite.

argilla-server needs Elasticsearch or OpenSearch, and neither can be installed on the test
machines. The server looks its engine up in a registry (``SearchEngine.register``), so this
module registers one under the name ``prefloop-test-memory`` and the server runs with
``ARGILLA_SEARCH_ENGINE=prefloop-test-memory``. Everything else the tests exercise (the SDK,
HTTP, the server's handlers, its SQLite database, Redis) is the real thing.

What it supports: indexing records, their responses, suggestions and status; listing and paging
a dataset's records; filters on record properties, metadata, suggestions and responses
(including the UI's per-user "pending" queue); sorting; dataset and user progress; metadata
metrics; a case-insensitive substring text query. What it does not: relevance scoring,
similarity (vector) search. Never use it outside tests: it keeps everything in one process's
memory and forgets it on restart.

It is imported by ``serve.py`` inside the argilla-server venv, not by prefloop.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any
from uuid import UUID

from argilla_server.enums import ResponseStatusFilter, SortOrder
from argilla_server.search_engine.base import (
    AndFilter,
    FloatMetadataMetrics,
    IntegerMetadataMetrics,
    MetadataFilterScope,
    RangeFilter,
    RecordFilterScope,
    ResponseFilterScope,
    SearchEngine,
    SearchResponseItem,
    SearchResponses,
    SuggestionFilterScope,
    TermsFilter,
    TermsMetrics,
)

ENGINE_NAME = "prefloop-test-memory"

# One store for the whole server process: the server makes a new engine instance per request.
_DOCS: dict[str, dict[str, Any]] = {}  # record id -> document
_INDEXES: set[str] = set()  # dataset ids with an index


def reset() -> None:
    """Forget everything (between test sessions in one process)."""
    _DOCS.clear()
    _INDEXES.clear()


def _response_doc(response: Any) -> dict[str, Any]:
    return {
        "id": str(response.id),
        "status": getattr(response.status, "value", response.status),
        "user_id": str(response.user_id),
        "values": {q: (v or {}).get("value") for q, v in (response.values or {}).items()},
    }


def _suggestion_doc(suggestion: Any) -> dict[str, Any]:
    return {
        "type": getattr(suggestion.type, "value", suggestion.type),
        "agent": suggestion.agent,
        "score": suggestion.score,
        "value": suggestion.value,
    }


def _record_doc(dataset: Any, record: Any) -> dict[str, Any]:
    return {
        "id": str(record.id),
        "dataset_id": str(dataset.id),
        "external_id": record.external_id,
        "fields": dict(record.fields or {}),
        "status": getattr(record.status, "value", record.status),
        "inserted_at": record.inserted_at,
        "updated_at": record.updated_at,
        "metadata": dict(record.metadata_ or {}),
        "responses": [_response_doc(r) for r in record.responses or []],
        "suggestions": {s.question.name: _suggestion_doc(s) for s in record.suggestions or []},
    }


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _terms_match(value: Any, wanted: list[str]) -> bool:
    if value is None:
        return False
    return any(str(v) in wanted for v in _as_list(value))


def _range_match(value: Any, ge: float | None, le: float | None) -> bool:
    if value is None or isinstance(value, (list, dict, str)):
        return False
    return (ge is None or value >= ge) and (le is None or value <= le)


def _match_value(flt: Any, value: Any) -> bool:
    if isinstance(flt, TermsFilter):
        return _terms_match(value, [str(v) for v in flt.values])
    if isinstance(flt, RangeFilter):
        return _range_match(value, flt.ge, flt.le)
    raise ValueError(f"{ENGINE_NAME}: unsupported filter {flt!r}")


def _user_responses(doc: dict[str, Any], user: Any) -> list[dict[str, Any]]:
    if user is None:
        return doc["responses"]
    return [r for r in doc["responses"] if r["user_id"] == str(user.id)]


def _matches(flt: Any, doc: dict[str, Any]) -> bool:
    if isinstance(flt, AndFilter):
        return all(_matches(f, doc) for f in flt.filters)
    scope = flt.scope
    if isinstance(scope, RecordFilterScope):
        return _match_value(flt, doc.get(scope.property))
    if isinstance(scope, MetadataFilterScope):
        return _match_value(flt, doc["metadata"].get(scope.metadata_property))
    if isinstance(scope, SuggestionFilterScope):
        return _match_value(flt, doc["suggestions"].get(scope.question, {}).get(scope.property))
    if isinstance(scope, ResponseFilterScope):
        responses = _user_responses(doc, scope.user)
        if scope.question:
            return any(_match_value(flt, r["values"].get(scope.question)) for r in responses)
        if scope.property == "status" and isinstance(flt, TermsFilter):
            wanted = [getattr(v, "value", v) for v in flt.values]
            if ResponseStatusFilter.pending.value in wanted and not responses:
                return True  # "pending": nothing answered yet (by this user, when one is given)
            return any(r["status"] in wanted for r in responses)
    raise ValueError(f"{ENGINE_NAME}: unsupported filter scope {scope!r}")


def _sort_key(scope: Any, doc: dict[str, Any]) -> Any:
    if isinstance(scope, RecordFilterScope):
        return doc.get(scope.property)
    if isinstance(scope, MetadataFilterScope):
        return doc["metadata"].get(scope.metadata_property)
    if isinstance(scope, SuggestionFilterScope):
        return doc["suggestions"].get(scope.question, {}).get(scope.property)
    if isinstance(scope, ResponseFilterScope):
        name = scope.question or scope.property
        values = [r["values"].get(name) if scope.question else r.get(name) for r in _user_responses(doc, scope.user)]
        numbers = [v for v in values if isinstance(v, (int, float))]
        return sum(numbers) / len(numbers) if numbers else None
    raise ValueError(f"{ENGINE_NAME}: unsupported sort scope {scope!r}")


def _text_match(doc: dict[str, Any], query: Any) -> bool:
    text = query if isinstance(query, str) else query.q
    field = None if isinstance(query, str) else query.field
    needle = str(text).lower()
    if needle in ("", "*"):
        return True
    values = [doc["fields"].get(field)] if field else list(doc["fields"].values())
    return any(needle in str(v).lower() for v in values if v is not None)


@SearchEngine.register(engine_name=ENGINE_NAME)
@dataclasses.dataclass
class MemorySearchEngine(SearchEngine):
    """TEST FIXTURE ONLY — see the module docstring."""

    @classmethod
    async def new_instance(cls) -> MemorySearchEngine:
        return cls()

    async def close(self) -> None:
        pass

    async def ping(self) -> bool:
        return True

    async def info(self) -> dict:
        return {"distribution": ENGINE_NAME, "version": {"number": "0", "distribution": ENGINE_NAME}}

    # ------------------------------------------------------------------ indexes
    async def create_index(self, dataset: Any) -> None:
        _INDEXES.add(str(dataset.id))

    async def delete_index(self, dataset: Any) -> None:
        _INDEXES.discard(str(dataset.id))
        for rid in [rid for rid, d in _DOCS.items() if d["dataset_id"] == str(dataset.id)]:
            del _DOCS[rid]

    async def configure_metadata_property(self, dataset: Any, metadata_property: Any) -> None:
        pass  # documents keep all metadata; nothing to map

    async def configure_index_vectors(self, vector_settings: Any) -> None:
        pass

    # ------------------------------------------------------------------ documents
    async def index_records(self, dataset: Any, records: Any) -> None:
        for record in records:
            _DOCS[str(record.id)] = _record_doc(dataset, record)

    async def partial_record_update(self, record: Any, **update: Any) -> None:
        doc = _DOCS.get(str(record.id))
        if doc is not None:
            doc.update({k: getattr(v, "value", v) for k, v in update.items()})

    async def delete_records(self, dataset: Any, records: Any) -> None:
        for record in records:
            _DOCS.pop(str(record.id), None)

    async def update_record_response(self, response: Any) -> None:
        doc = _DOCS.get(str(response.record_id))
        if doc is not None:
            new = _response_doc(response)
            doc["responses"] = [r for r in doc["responses"] if r["id"] != new["id"]] + [new]

    async def delete_record_response(self, response: Any) -> None:
        doc = _DOCS.get(str(response.record_id))
        if doc is not None:
            doc["responses"] = [r for r in doc["responses"] if r["id"] != str(response.id)]

    async def update_record_suggestion(self, suggestion: Any) -> None:
        doc = _DOCS.get(str(suggestion.record_id))
        if doc is not None:
            doc["suggestions"][suggestion.question.name] = _suggestion_doc(suggestion)

    async def delete_record_suggestion(self, suggestion: Any) -> None:
        doc = _DOCS.get(str(suggestion.record_id))
        if doc is not None:
            doc["suggestions"].pop(suggestion.question.name, None)

    # ------------------------------------------------------------------ reads
    def _dataset_docs(self, dataset: Any) -> list[dict[str, Any]]:
        return [d for d in _DOCS.values() if d["dataset_id"] == str(dataset.id)]

    async def get_dataset_progress(self, dataset: Any) -> dict:
        docs = self._dataset_docs(dataset)
        return {"total": len(docs), **Counter(d["status"] for d in docs)}

    async def get_dataset_user_progress(self, dataset: Any, user: Any) -> dict:
        statuses = [r["status"] for d in self._dataset_docs(dataset) for r in _user_responses(d, user)]
        return {"total": len(statuses), **Counter(statuses)}

    async def search(
        self,
        dataset: Any,
        query: Any = None,
        filter: Any = None,  # noqa: A002 - the server's keyword
        sort: list[Any] | None = None,
        offset: int = 0,
        limit: int = 100,
        user_id: Any = None,
    ) -> SearchResponses:
        docs = self._dataset_docs(dataset)
        if query is not None:
            docs = [d for d in docs if _text_match(d, query)]
        if filter is not None:
            docs = [d for d in docs if _matches(filter, d)]
        for order in reversed(sort or []):  # stable sorts, last key first
            present = [d for d in docs if _sort_key(order.scope, d) is not None]
            missing = [d for d in docs if _sort_key(order.scope, d) is None]
            present.sort(key=lambda d: _sort_key(order.scope, d), reverse=order.order == SortOrder.desc)
            docs = present + missing
        page = docs[offset : offset + limit]
        score = 1.0 if query is not None else None
        return SearchResponses(items=[SearchResponseItem(record_id=UUID(d["id"]), score=score) for d in page], total=len(docs))

    async def similarity_search(self, *args: Any, **kwargs: Any) -> SearchResponses:
        raise NotImplementedError(f"{ENGINE_NAME} (a test fixture) has no vector similarity search")

    async def compute_metrics_for(self, metadata_property: Any) -> Any:
        name = metadata_property.name
        values = [
            v
            for d in _DOCS.values()
            if d["dataset_id"] == str(metadata_property.dataset_id)
            for v in _as_list(d["metadata"].get(name))
            if v is not None
        ]
        kind = getattr(metadata_property.type, "value", metadata_property.type)
        if kind == "terms":
            counts = Counter(str(v) for v in values)
            return TermsMetrics(total=len(counts), values=[TermsMetrics.TermCount(term=t, count=c) for t, c in counts.most_common()])
        cls = IntegerMetadataMetrics if kind == "integer" else FloatMetadataMetrics
        return cls(min=min(values), max=max(values)) if values else cls()

