"""Prompt import: every format, all-or-nothing, errors that name file, line and field."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from prefloop.errors import DataError
from prefloop.feedback.importer import import_prompts
from prefloop.feedback.store.models import Prompt


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
        ({"prompt": "x", "source": 7}, "field 'source' must be text"),
        ({"prompt": "x", "source": "\u200b"}, "field 'source'"),
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


def test_tags_given_on_the_command_line_follow_the_policy(store, tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}])
    for bad in ("\u200b", "x\x00"):
        with pytest.raises(DataError, match=r"tags given with --tag\[1\]"):
            import_prompts(store, f, tags=["fine", bad])
    assert count(store) == 0


def test_unsupported_and_missing_files(store, tmp_path):
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported file type .txt"):
        import_prompts(store, tmp_path / "p.txt")
    with pytest.raises(DataError, match="does not exist"):
        import_prompts(store, tmp_path / "none.jsonl")


# ----------------------------------------------------------------------------- reading files honestly
def test_csv_row_with_more_or_fewer_cells_than_the_header_is_refused(store, tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("prompt,reference\nfine,ok\nWhat is 2+2, exactly?,4\n")  # the example: 3 cells
    with pytest.raises(DataError, match=r"p\.csv:3: 3 cells, but the header has 2 columns") as exc:
        import_prompts(store, f)
    assert "quote" in str(exc.value)
    f.write_text("prompt,reference\nfine,ok\nalone\n")
    with pytest.raises(DataError, match=r"p\.csv:3: 1 cell, but the header has 2 columns"):
        import_prompts(store, f)
    assert count(store) == 0


def test_csv_quoted_commas_quotes_and_newlines_round_trip(store, tmp_path):
    import csv

    rows = [
        ["What is 2+2, exactly?", "4, of course"],
        ['She said "hi"\r\nthen left', "  leading and trailing spaces  "],
        ["multi\nline\nprompt", "x,y\nz"],
    ]
    f = tmp_path / "p.csv"
    with f.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", "reference"])
        w.writerows(rows)
    assert import_prompts(store, f).created == 3
    with store.session() as s:
        got = [(p.text, p.reference) for p in s.scalars(select(Prompt).order_by(Prompt.id))]
    assert got == [tuple(r) for r in rows]


def test_csv_header_problems_are_named(store, tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("prompt,prompt\na,b\n")
    with pytest.raises(DataError, match=r"p\.csv:1: column 'prompt' appears twice in the header"):
        import_prompts(store, f)
    f.write_text('prompt,reference\n"never closed,x\n')
    with pytest.raises(DataError, match=r"p\.csv:2: "):
        import_prompts(store, f)
    assert count(store) == 0


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_utf8_bom_is_accepted(store, tmp_path, suffix):
    f = tmp_path / f"p{suffix}"
    body = "prompt,reference\nhello,hi\n" if suffix == ".csv" else '{"prompt": "hello", "reference": "hi"}\n'
    f.write_bytes(b"\xef\xbb\xbf" + body.encode())
    assert import_prompts(store, f).created == 1
    with store.session() as s:
        p = s.scalar(select(Prompt))
    assert (p.text, p.reference) == ("hello", "hi")


@pytest.mark.parametrize(
    ("name", "data", "where"),
    [
        ("p.jsonl", b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n', r"p\.jsonl:2: not valid UTF-8 \(byte 0xe9 at column 16\)"),
        ("p.csv", b"prompt\nok\nfine\ncaf\xe9\n", r"p\.csv:4: not valid UTF-8 \(byte 0xe9 at column 4\)"),
        ("p.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"p\.jsonl:1: not valid UTF-8 \(byte 0x89 at column 1\)"),
        ("p.jsonl", b'{"prompt": "a\x00b"}\n', r"p\.jsonl:1: not valid JSON"),  # a raw NUL byte
    ],
)
def test_invalid_utf8_or_binary_input_names_file_and_line(store, tmp_path, name, data, where):
    f = tmp_path / name
    f.write_bytes(data)
    with pytest.raises(DataError, match=where) as exc:
        import_prompts(store, f)
    assert "\n" not in str(exc.value)
    assert count(store) == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "x", "meta": {"score": NaN}}', r"p\.jsonl:2: field 'meta'\.score is nan; only finite numbers"),
        ('{"prompt": "x", "weight": Infinity}', r"p\.jsonl:2: field 'weight' is inf; only finite numbers"),
        ('{"prompt": "x", "weight": [-Infinity]}', r"p\.jsonl:2: field 'weight'\[0\] is -inf"),
        ('{"prompt": "x", "prompt": "y"}', r"p\.jsonl:2: field 'prompt' appears twice"),
        ('{"prompt": "x", "meta": {"a": 1, "a": 2}}', r"p\.jsonl:2: field 'a' appears twice"),
        ('{"prompt": "\\ud800"}', r"p\.jsonl:2: field 'prompt' holds an invalid character \(lone surrogate U\+D800\)"),
        ('{"prompt": "a\\u0000b"}', r"p\.jsonl:2: field 'prompt' holds a NUL character"),
        ('{"prompt": "x", "reference": "r\\u0000"}', r"p\.jsonl:2: field 'reference' holds a NUL"),
        ('{"prompt": "x", "tags": ["ok", "\\udfff"]}', r"p\.jsonl:2: field 'tags'\[1\] holds an invalid character"),
        ('{"prompt": "x", "meta": {"k\\u0000": 1}}', r"p\.jsonl:2: field 'meta' key .* holds a NUL"),
        ('{"messages": [{"role": "user", "content": "\\ud83d"}]}', r"p\.jsonl:2: field 'messages': messages\[0\]\.content holds an invalid"),
        ('{"prompt": "\\u200b\\ufeff \\u2060"}', r"p\.jsonl:2: field 'prompt' is empty"),
        ('{"prompt": 7}', r"p\.jsonl:2: field 'prompt' is empty or not text"),
        ('{"prompt": "x", "tags": ["ok", "\\u200b"]}', r"p\.jsonl:2: field 'tags'\[1\] is empty"),
    ],
)
def test_json_values_that_cannot_be_stored_are_refused(store, tmp_path, line, message):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "fine"}\n' + line + "\n")
    with pytest.raises(DataError, match=message):
        import_prompts(store, f)
    assert count(store) == 0


def test_parquet_values_that_cannot_be_stored_are_named_by_row_and_field(store, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b", "c"], "score": [1.0, float("nan"), 2.0]}), f)
    with pytest.raises(DataError, match=r"p\.parquet row 2: field 'score' is nan"):
        import_prompts(store, f)
    pq.write_table(pa.table({"prompt": ["a", "b"], "blob": [b"x", b"\xff"]}), f)
    with pytest.raises(DataError, match=r"p\.parquet row 1: field 'blob': bytes is not a JSON value"):
        import_prompts(store, f)
    pq.write_table(pa.table({"prompt": pa.array([b"ok", b"caf\xe9"], type=pa.binary()).cast(pa.string(), safe=False)}), f)
    with pytest.raises(DataError, match=r"p\.parquet"):
        import_prompts(store, f)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"junk\.parquet: not a readable Parquet file"):
        import_prompts(store, tmp_path / "junk.parquet")
    assert count(store) == 0


def test_a_rows_source_is_kept_and_the_files_name_is_the_default(store, tmp_path):
    f = write_jsonl(tmp_path / "mixed.jsonl", [{"prompt": "from the wiki", "source": "wiki export 2026-11"},
                                               {"prompt": "no source given"}])
    import_prompts(store, f)
    with store.session() as s:
        assert [(p.text, p.source) for p in s.scalars(select(Prompt).order_by(Prompt.id))] == [
            ("from the wiki", "wiki export 2026-11"), ("no source given", "mixed.jsonl")]
