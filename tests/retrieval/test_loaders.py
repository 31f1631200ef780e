from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_assistant.retrieval import DocumentLoader, load_documents


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    (root / "guide").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "readme.md").write_text("# Readme\nHello there.", encoding="utf-8")
    (root / "guide" / "setup.txt").write_text("Install it. Run it.", encoding="utf-8")
    (root / ".git" / "HEAD.txt").write_text("ignored", encoding="utf-8")
    (root / "image.png").write_bytes(b"\x89PNG\r\n")
    (root / "blob.txt").write_bytes(b"abc\x00\x01\x02def")
    (root / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    (root / "empty.txt").write_text("  \n", encoding="utf-8")
    lines = [
        json.dumps({"id": "faq-1", "text": "Q1 answer.", "topic": "billing", "rank": 2}),
        "",
        '{"id": "broken", "text": "unterminated',
        json.dumps(["not", "an", "object"]),
        json.dumps({"text": "No id here.", "tags": ["a", "b"], "skip": None}),
        json.dumps({"id": "no-text", "body": "wrong field"}),
    ]
    (root / "faq.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_folder_load_reads_supported_files_recursively(corpus: Path) -> None:
    result = load_documents([corpus])
    by_id = {d.id: d for d in result.documents}
    assert sorted(by_id) == ["faq-1", "faq.jsonl#5", "guide/setup.txt", "readme.md"]
    assert by_id["readme.md"].text == "# Readme\nHello there."
    assert by_id["guide/setup.txt"].source == str(corpus / "guide" / "setup.txt")
    assert by_id["faq-1"].metadata == {"topic": "billing", "rank": "2"}
    assert by_id["faq-1"].source == f"{corpus / 'faq.jsonl'}:1"
    assert by_id["faq.jsonl#5"].metadata == {"tags": '["a", "b"]'}


def test_problems_are_reported_with_file_and_line_never_fatal(corpus: Path) -> None:
    result = load_documents([corpus])
    described = [str(p) for p in result.problems]
    faq = str(corpus / "faq.jsonl")
    assert any(p.startswith(f"{faq}:3: malformed JSON") for p in described), described
    assert any(p.startswith(f"{faq}:4: expected a JSON object, got list") for p in described)
    assert any(p.startswith(f"{faq}:6: no text in field 'text'") for p in described)
    assert f"{corpus / 'blob.txt'}: binary file skipped" in described
    assert any(p.startswith(f"{corpus / 'latin1.md'}: not UTF-8 text") for p in described)
    assert f"{corpus / 'empty.txt'}: empty file skipped" in described
    assert not any("HEAD.txt" in p or "image.png" in p for p in described), "ignored, not problems"
    assert all(p.line is None for p in result.problems if not p.path.endswith(".jsonl"))


def test_explicit_files_use_their_name_as_id_and_bad_paths_are_reported(corpus: Path, tmp_path: Path) -> None:
    result = load_documents([corpus / "guide" / "setup.txt", corpus / "image.png", tmp_path / "missing"])
    assert [d.id for d in result.documents] == ["setup.txt"]
    assert [p.message for p in result.problems] == [
        "unsupported file type '.png' (use .txt, .md or .jsonl)",
        "no such file or folder",
    ]


def test_unreadable_file_is_skipped(tmp_path: Path) -> None:
    # A dangling link fails to read even as root (unlike chmod 0).
    (tmp_path / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    (tmp_path / "ok.txt").write_text("fine", encoding="utf-8")
    result = load_documents([tmp_path])
    assert [d.id for d in result.documents] == ["ok.txt"]
    assert [(Path(p.path).name, p.message.split(":")[0]) for p in result.problems] == [
        ("gone.txt", "unreadable")
    ]


def test_custom_text_field_and_lazy_loader_counts(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(
        json.dumps({"id": 7, "body": "Seven.", "text": "kept as metadata"}) + "\n", encoding="utf-8"
    )
    seen = []
    loader = DocumentLoader(text_field="body", on_problem=seen.append)
    documents = list(loader.iter_documents([path]))
    assert [(d.id, d.text, dict(d.metadata)) for d in documents] == [
        ("7", "Seven.", {"text": "kept as metadata"})
    ]
    assert loader.files_read == 1
    assert loader.problems == seen == []
    with pytest.raises(ValueError, match="''"):
        DocumentLoader(text_field="")
