"""Knowledge-base import on SQLite and PostgreSQL: provenance, idempotency, changed documents,
chunk boundaries, and bad input refused in one line with nothing written."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from prefloop.errors import DataError
from prefloop.retrieval.chunking import Chunking, chunk_spans
from prefloop.retrieval.ingest import import_kb
from prefloop.retrieval.kb import delete_kb, kb_info, list_kbs
from prefloop.retrieval.models import KbChunk, KbDocument

REFUNDS = "# Refunds\nRefunds are paid within 14 days after the return arrives.\n"
SHIPPING = "# Shipping\nShipping to Canada takes 5 to 7 business days.\n"


def chunks(store, kb="default"):
    """(document key, position, chunk id, text, char span) for every chunk, in a stable order."""
    with store.session() as s:
        kb_id = kb_info(store, kb).id
        rows = s.execute(
            select(KbDocument.key, KbChunk.position, KbChunk.id, KbChunk.text, KbChunk.char_start, KbChunk.char_end, KbDocument.text)
            .join(KbDocument, KbDocument.id == KbChunk.document_id).where(KbChunk.kb_id == kb_id)
        ).all()
    return sorted(rows)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "policies"
    d.mkdir()
    (d / "refunds.md").write_text(REFUNDS)
    (d / "shipping.md").write_text(SHIPPING)
    (d / "sub").mkdir()
    (d / "sub" / "plans.txt").write_text("The Pro plan costs 12 USD a month.")
    (d / ".hidden.pdf").write_text("skipped: hidden")
    return d


def test_folder_import_keeps_provenance(store, folder):
    r = import_kb(store, folder)
    assert (r.created, r.changed, r.unchanged, r.documents, r.chunks) == (3, 0, 0, 3, 3)
    with store.session() as s:
        docs = {d.key: d for d in s.scalars(select(KbDocument))}
    assert set(docs) == {"policies/refunds.md", "policies/shipping.md", "policies/sub/plans.txt"}
    assert docs["policies/refunds.md"].title == "Refunds"  # the Markdown heading
    assert docs["policies/sub/plans.txt"].title == "plans"  # the file name
    assert docs["policies/refunds.md"].source == "policies/refunds.md"
    for _key, _pos, _cid, text, start, end, doc_text in chunks(store):
        assert text == doc_text[start:end]  # a chunk is an exact slice of its document


def test_reimport_is_idempotent(store, folder):
    first = import_kb(store, folder)
    before, info = chunks(store), kb_info(store, "default")
    again = import_kb(store, folder)
    assert (again.created, again.changed, again.unchanged, again.chunks_written) == (0, 0, 3, 0)
    assert again.content_hash == first.content_hash
    assert chunks(store) == before  # same chunk rows, same ids
    assert kb_info(store, "default").revision == info.revision  # indexes stay valid


def test_changed_document_replaces_its_chunks_only(store, folder):
    import_kb(store, folder)
    before = {row[0]: row for row in chunks(store)}
    info = kb_info(store, "default")
    (folder / "refunds.md").write_text("# Refunds\nRefunds are paid within 30 days.\n")
    r = import_kb(store, folder)
    assert (r.created, r.changed, r.unchanged) == (0, 1, 2)
    after = {row[0]: row for row in chunks(store)}
    assert "30 days" in after["policies/refunds.md"][3] and "14 days" not in after["policies/refunds.md"][3]
    assert after["policies/refunds.md"][2] != before["policies/refunds.md"][2]  # a new chunk row
    assert after["policies/shipping.md"] == before["policies/shipping.md"]  # untouched
    new = kb_info(store, "default")
    assert new.content_hash != info.content_hash and new.revision != info.revision
    assert new.chunks == 3


def test_prune_removes_documents_missing_from_the_import(store, folder):
    import_kb(store, folder)
    (folder / "shipping.md").unlink()
    kept = import_kb(store, folder)
    assert kept.removed == 0 and kept.documents == 3  # without --prune an import only adds and updates
    pruned = import_kb(store, folder, prune=True)
    assert pruned.removed == 1 and pruned.documents == 2
    assert {row[0] for row in chunks(store)} == {"policies/refunds.md", "policies/sub/plans.txt"}


def test_new_chunking_rechunks_every_document(store, folder, tmp_path):
    import_kb(store, folder)
    other = tmp_path / "more.jsonl"
    other.write_text(json.dumps({"id": "faq-1", "text": " ".join(f"w{i}" for i in range(30))}) + "\n")
    import_kb(store, other)
    r = import_kb(store, folder, chunking=Chunking(size=4, overlap=1))
    assert r.rechunked == 4  # the three files and the JSONL document it did not name
    faq = [row for row in chunks(store) if row[0] == "faq-1"]
    assert len(faq) == 10  # 30 words, windows of 4 stepping by 3
    assert kb_info(store, "default").chunking["size"] == 4


def test_jsonl_records_ids_titles_meta(store, tmp_path):
    p = tmp_path / "docs.jsonl"
    p.write_text(
        json.dumps({"id": "ref-1", "text": "Refunds take 14 days.", "title": "Refunds", "source": "https://acme.example/refunds",
                    "meta": {"team": "billing"}, "region": "EU"}) + "\n\n"
        + json.dumps({"id": 7, "text": "Numbers are ids too."}) + "\n"
        + json.dumps({"text": "No id: keyed by file and line."}) + "\n"
    )
    assert import_kb(store, p, kb="faq").created == 3
    with store.session() as s:
        docs = {d.key: d for d in s.scalars(select(KbDocument))}
    assert set(docs) == {"ref-1", "7", "docs.jsonl:4"}
    assert docs["ref-1"].meta == {"team": "billing", "region": "EU"}  # unknown fields kept in meta
    assert docs["ref-1"].source == "https://acme.example/refunds"
    assert docs["docs.jsonl:4"].source == "docs.jsonl:4"


def test_parquet_and_saved_dataset(store, tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": "a", "text": "Alpha document."}, {"id": "b", "text": "Beta document."}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "docs.parquet")
    assert import_kb(store, tmp_path / "docs.parquet", kb="pq").created == 2
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    r = import_kb(store, tmp_path / "ds", kb="hf")
    assert (r.created, r.documents) == (2, 2)
    assert {i.name for i in list_kbs(store)} == {"pq", "hf"}


BAD_LINES = [
    ({"id": "x"}, "no 'text' field"),
    ({"text": "   \u200b "}, "field 'text' is empty"),
    ({"text": "nul \u0000 here"}, "NUL"),
    ({"text": "ok", "meta": ["not", "an", "object"]}, "field 'meta' must be an object"),
    ({"text": "ok", "id": True}, "field 'id' must be text or an integer"),
    ({"text": "ok", "title": 3}, "field 'title': expected text"),
    ({"text": "ok", "meta": {"score": float("nan")}}, "only finite numbers"),
]


@pytest.mark.parametrize(("record", "message"), BAD_LINES, ids=[m for _, m in BAD_LINES])
def test_bad_record_is_one_line_and_nothing_is_written(store, folder, tmp_path, record, message):
    import_kb(store, folder)
    before, info = chunks(store), kb_info(store, "default")
    p = tmp_path / "bad.jsonl"
    good = json.dumps({"id": "fine", "text": "A good document comes first."})
    p.write_text(good + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError) as exc:
        import_kb(store, p)
    text = str(exc.value)
    assert f"{p}:2" in text and message in text and "\n" not in text
    assert chunks(store) == before and kb_info(store, "default") == info  # the good line was not imported either


def test_lone_surrogate_and_duplicate_ids_are_refused(store, tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "broken \\ud800 text"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'text' holds an invalid character"):
        import_kb(store, p)
    p.write_text('{"id": "a", "text": "one"}\n{"id": "a", "text": "two"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: document key 'a' already used at .*bad.jsonl:1"):
        import_kb(store, p)
    assert list_kbs(store) == []  # no knowledge base was even created


def test_bad_files_in_a_folder(store, folder):
    (folder / "latin1.md").write_bytes("Caf\xe9\nline two\xff".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.md:1: not valid UTF-8"):
        import_kb(store, folder)
    (folder / "latin1.md").unlink()
    (folder / "manual.pdf").write_bytes(b"%PDF-1.4")
    with pytest.raises(DataError, match=r"manual.pdf: unsupported file type .pdf"):
        import_kb(store, folder)
    assert list_kbs(store) == []


def test_delete_kb_removes_its_documents_and_chunks(store, folder, tmp_path):
    import_kb(store, folder, kb="a")
    import_kb(store, folder, kb="b")
    assert delete_kb(store, "a").chunks == 3
    assert [i.name for i in list_kbs(store)] == ["b"]
    with store.session() as s:
        assert len(s.scalars(select(KbChunk)).all()) == 3


# ----------------------------------------------------------------------------------- chunk boundaries
WORDS = " ".join(f"w{i}" for i in range(10))


@pytest.mark.parametrize(
    ("size", "overlap", "expected"),
    [
        (4, 1, [(0, 4), (3, 7), (6, 10)]),  # step 3; the last window ends at the last word
        (4, 0, [(0, 4), (4, 8), (8, 10)]),  # disjoint; a short tail
        (5, 2, [(0, 5), (3, 8), (6, 10)]),
        (10, 3, [(0, 10)]),  # the whole text fits: one chunk, no repeat
        (50, 0, [(0, 10)]),
        (1, 0, [(i, i + 1) for i in range(10)]),
    ],
)
def test_word_windows(size, overlap, expected):
    spans = chunk_spans(WORDS, Chunking(size=size, overlap=overlap))
    words = WORDS.split()
    assert [(WORDS[s.char_start:s.char_end]) for s in spans] == [" ".join(words[a:b]) for a, b in expected]
    assert [s.n_units for s in spans] == [b - a for a, b in expected]
    assert [s.position for s in spans] == list(range(len(expected)))


def test_chunks_keep_the_original_spacing_and_skip_blank_text():
    text = "  first line\n\nsecond\tline  \n"
    (span,) = chunk_spans(text, Chunking(size=10, overlap=0))
    assert text[span.char_start:span.char_end] == "first line\n\nsecond\tline"
    assert chunk_spans(" \n\t ", Chunking()) == []


def test_token_windows_follow_the_tokenizer():
    from transformers import AutoTokenizer

    from prefloop.retrieval.dense import packaged_minilm_dir

    tok = AutoTokenizer.from_pretrained(str(packaged_minilm_dir()))
    text = "Refunds are paid within fourteen days, unbelievably."
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    spans = chunk_spans(text, Chunking(unit="tokens", size=4, overlap=1, tokenizer="minilm"), tok)
    assert sum(s.n_units for s in spans) - (len(spans) - 1) == n  # every token once, plus the overlaps
    for s in spans:
        piece = text[s.char_start:s.char_end]
        assert len(tok(piece, add_special_tokens=False)["input_ids"]) <= 4 + 1  # a re-split edge may differ by one
    assert spans[0].char_start == 0 and spans[-1].char_end == len(text)


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"size": 4, "overlap": 4}, "overlap (4) must be smaller than size (4)"),
     ({"unit": "tokens"}, "needs a tokenizer"),
     ({"size": 0}, "greater than or equal to 1")],
)
def test_bad_chunking_is_refused(fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Chunking(**fields)


def test_concurrent_import_waits_for_the_other_and_leaves_no_stale_chunks(store, folder):
    """PostgreSQL (READ COMMITTED): an import that runs while another transaction rewrites the
    same document must not keep that transaction's chunks beside its own."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite serialises writers (BEGIN IMMEDIATE); the race exists on PostgreSQL only")
    import threading
    import time

    from sqlalchemy import text

    import_kb(store, folder)
    (folder / "refunds.md").write_text("# Refunds\nRefunds are paid within 30 days.\n")
    with store.engine.connect() as other:
        tx = other.begin()
        # another import in flight: it holds the knowledge base and has rewritten refunds.md
        other.execute(text("SELECT id FROM knowledge_bases WHERE name = 'default' FOR UPDATE"))
        doc_id = other.execute(text("SELECT id FROM kb_documents WHERE key = 'policies/refunds.md'")).scalar()
        other.execute(text("UPDATE kb_documents SET content_hash = 'x', text = 'other' WHERE id = :d"), {"d": doc_id})
        other.execute(text("DELETE FROM kb_chunks WHERE document_id = :d"), {"d": doc_id})
        other.execute(text("INSERT INTO kb_chunks (kb_id, document_id, position, char_start, char_end, n_units, text, content_hash) "
                           "SELECT kb_id, id, 0, 0, 5, 1, 'other', 'x' FROM kb_documents WHERE id = :d"), {"d": doc_id})
        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(r=import_kb(store, folder)))
        worker.start()
        deadline = time.monotonic() + 60
        with store.engine.connect() as probe:  # wait until the import blocks on the other transaction
            while not probe.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                         "AND datname = current_database() AND (query ILIKE '%knowledge_bases%' OR query ILIKE '%kb_chunks%')")).scalar():
                assert time.monotonic() < deadline, "the import never waited for the other transaction"
                assert worker.is_alive(), "the import finished without waiting for the other transaction"
                probe.rollback()
        tx.commit()
    worker.join(timeout=120)
    assert result["r"].changed == 1
    refunds = [row for row in chunks(store) if row[0] == "policies/refunds.md"]
    assert [row[3] for row in refunds] == ["# Refunds\nRefunds are paid within 30 days."]
