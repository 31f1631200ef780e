from __future__ import annotations

import pytest
from pydantic import ValidationError

from hybrid_assistant.retrieval import RetrievalSettings


def test_defaults_are_valid() -> None:
    settings = RetrievalSettings()
    assert settings.index_type == "flat"
    assert settings.rrf_k == 60
    assert settings.index_build_key() == "flat"


def test_overlap_must_be_smaller_than_size_and_message_shows_values() -> None:
    with pytest.raises(
        ValidationError, match=r"chunk_overlap \(300\) must be smaller than chunk_size \(200\)"
    ):
        RetrievalSettings(chunk_size=200, chunk_overlap=300)


def test_unknown_index_type_and_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="annoy"):
        RetrievalSettings(index_type="annoy")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="chunk_sise"):
        RetrievalSettings(chunk_sise=10)  # type: ignore[call-arg]


def test_build_key_names_the_parameters_that_shape_the_index() -> None:
    assert RetrievalSettings(index_type="ivf", ivf_nlist=64).index_build_key() == "ivf-nlist64-t10000"
    assert RetrievalSettings(index_type="ivf").index_build_key() == "ivf-nlistauto-t10000"
    hnsw = RetrievalSettings(index_type="hnsw", hnsw_m=16, hnsw_ef_search=10)
    assert hnsw.index_build_key() == "hnsw-m16-efc40", "efSearch is a query-time knob"
