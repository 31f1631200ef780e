"""server.convert: the dataclasses that cross the wire field for field, and the knowledge converters."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from hybrid_assistant.retrieval.types import DeleteSummary, Document, IndexStats, IngestSummary
from hybrid_assistant.server import convert
from hybrid_assistant.server.adapter_registry import AdapterInfo
from hybrid_assistant.server.prompt import ContextPassage
from hybrid_assistant.v1 import assistant_pb2 as pb

PASSAGE = ContextPassage("doc-1", "doc-1:0", 0.5, "Paris is the capital.", {"source": "atlas"}, 2)
ADAPTER = AdapterInfo(
    name="alpha",
    path="/adapters/alpha",
    resident=True,
    pinned=True,
    rank=4,
    target_modules=("q_proj", "v_proj"),
    base_model="tiny-llama",
    in_flight=3,
    last_used_unix=1_700_000_000.5,
    load_ms=12.5,
    fingerprint="ab" * 32,
    metadata={"purpose": "tests"},
)
INGEST = IngestSummary(
    received=7, added=3, updated=2, unchanged=1, chunks_added=9, chunks_removed=4, errors=("doc 'x': empty",)
)
DELETE = DeleteSummary(deleted=2, not_found=("gone",))
STATS = IndexStats(
    documents=5,
    chunks=40,
    dimension=384,
    index_type="flat",
    bytes_on_disk=123_456,
    embedder="hashing",
    fingerprint="cd" * 8,
)
ONE_TO_ONE: list[tuple[Any, Any, Any]] = [
    (PASSAGE, pb.Passage, convert.passage_to_pb),
    (ADAPTER, pb.AdapterInfo, convert.adapter_info_to_pb),
    (INGEST, pb.IngestResponse, convert.ingest_to_pb),
    (DELETE, pb.DeleteDocumentsResponse, convert.delete_to_pb),
    (STATS, pb.IndexStatsResponse, convert.index_stats_to_pb),
]


@pytest.mark.parametrize(("value", "message", "to_pb"), ONE_TO_ONE, ids=lambda v: type(v).__name__)
def test_one_to_one_dataclasses_carry_every_field(value: Any, message: Any, to_pb: Any) -> None:
    # Same field names on both sides: a field added to one and not the other fails here.
    names = [f.name for f in dataclasses.fields(value)]
    assert sorted(names) == sorted(message.DESCRIPTOR.fields_by_name)
    converted = to_pb(value)
    assert isinstance(converted, message)
    for name in names:
        got, want = getattr(converted, name), getattr(value, name)
        if isinstance(want, tuple):
            assert tuple(got) == want
        elif isinstance(want, dict):
            assert dict(got) == want
        else:
            assert got == pytest.approx(want)


def test_passage_round_trips() -> None:
    assert convert.passage_from_pb(convert.passage_to_pb(PASSAGE)) == PASSAGE


def test_document_from_pb() -> None:
    message = pb.Document(id="d", text="t", metadata={"k": "v"}, source="s.md")
    document = convert.document_from_pb(message)
    assert document == Document(id="d", text="t", metadata={"k": "v"}, source="s.md")


def test_retrieve_response_keeps_passage_order_and_time() -> None:
    other = dataclasses.replace(PASSAGE, chunk_id="doc-1:1", score=0.25)
    response = convert.retrieve_to_pb([PASSAGE, other], took_ms=3.5)
    assert [p.chunk_id for p in response.passages] == ["doc-1:0", "doc-1:1"]
    assert response.took_ms == pytest.approx(3.5)
    assert MessageToDict(response.passages[0])["metadata"] == {"source": "atlas"}


def test_sampling_carries_min_tokens_and_ignore_eos() -> None:
    from hybrid_assistant.requests import generate_request
    from hybrid_assistant.server.core_types import SamplingInput

    unset = convert.sampling(generate_request("hi").sampling)
    assert (unset.min_tokens, unset.ignore_eos) == (None, False)
    assert unset == SamplingInput()
    both = convert.sampling(generate_request("hi", max_tokens=8, min_tokens=8, ignore_eos=True).sampling)
    assert (both.max_tokens, both.min_tokens, both.ignore_eos) == (8, 8, True)
    zero = generate_request("hi", min_tokens=0).sampling
    assert zero.HasField("min_tokens") and convert.sampling(zero).min_tokens == 0
