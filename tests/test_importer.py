"""Prompt import: every format, all-or-nothing, errors that name file, line and field."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from prefloop.errors import DataError
from prefloop.feedback.importer import import_prompts
from prefloop.feedback.models import Prompt


def count(store) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(Prompt))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_text_and_messages_with_split_tags_meta(store, tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "Hello?", "split": "eval", "tags": ["greet"], "customer": "Ada"},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "reference": "Hello!"},
    ])
    res = import_prompts(store, f, tags=["batch1"])
    assert (res.created, res.existing) == (2, 0)
    with store.session() as s:
        a, b = s.scalars(select(Prompt).order_by(Prompt.id)).all()
        assert (a.text, a.split, a.tags, a.meta) == ("Hello?", "eval", ["batch1", "greet"], {"customer": "Ada"})
        assert b.messages[0]["role"] == "system" and b.reference == "Hello!" and b.split == "train"
        assert b.as_messages()[-1] == {"role": "user", "content": "Hi"}


def test_reimport_does_not_duplicate(store, tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": "b"}])
    import_prompts(store, f)
    res = import_prompts(store, f)
    assert (res.created, res.existing) == (0, 2) and count(store) == 2


def test_malformed_line_names_file_and_line_and_imports_nothing(store, tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "fine"}\n{"prompt": "also fine"}\n{"prompt": "broken"\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:3: not valid JSON"):
        import_prompts(store, f)
    assert count(store) == 0


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"text_": "x"}, "no 'prompt' or 'messages' field"),
        ({"prompt": "  "}, "field 'prompt' is empty"),
        ({"prompt": "x", "split": "test"}, "field 'split' is 'test'"),
        ({"prompt": "x", "tags": [1]}, "field 'tags' must be a list of strings"),
        ({"messages": [{"role": "bot", "content": "x"}]}, r"messages\[0\]\.role is 'bot'"),
        ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}, "must end with a user turn"),
        ({"prompt": "x", "messages": [{"role": "user", "content": "y"}]}, "either 'prompt' or 'messages'"),
    ],
)
def test_invalid_records_are_named(store, tmp_path, row, message):
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, row])
    with pytest.raises(DataError, match=message) as exc:
        import_prompts(store, f)
    assert "p.jsonl:2" in str(exc.value)
    assert count(store) == 0


def test_csv_parquet_and_saved_hf_dataset(store, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset, DatasetDict

    csv = tmp_path / "p.csv"
    csv.write_text('prompt,split,tags,messages\nfirst,eval,"a, b",\n,,,"[{""role"": ""user"", ""content"": ""second""}]"\n')
    assert import_prompts(store, csv).created == 2
    pq.write_table(pa.table({"prompt": ["third", "fourth"]}), tmp_path / "p.parquet")
    assert import_prompts(store, tmp_path / "p.parquet", split="eval").created == 2
    DatasetDict({"train": Dataset.from_dict({"prompt": ["fifth"]}), "test": Dataset.from_dict({"prompt": ["sixth"]})}).save_to_disk(str(tmp_path / "hf"))
    assert import_prompts(store, tmp_path / "hf").created == 2
    with store.session() as s:
        rows = {p.display_text: (p.split, p.tags) for p in s.scalars(select(Prompt))}
    assert rows["first"] == ("eval", ["a", "b"])
    assert rows["second"][0] == "train"
    assert rows["third"][0] == rows["fourth"][0] == "eval"
    assert rows["fifth"][0] == "train" and rows["sixth"][0] == "eval"


def test_unsupported_and_missing_files(store, tmp_path):
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported file type .txt"):
        import_prompts(store, tmp_path / "p.txt")
    with pytest.raises(DataError, match="does not exist"):
        import_prompts(store, tmp_path / "none.jsonl")
