"""Knowledge bases and retrievers: the facts a model never saw, found and placed into its prompt.

- :mod:`.models`, :mod:`.kb`: knowledge bases, documents and chunks in the store;
- :mod:`.chunking`, :mod:`.ingest`: ``prefloop kb import`` (folders of .txt/.md, JSONL, CSV,
  Parquet, saved HF datasets), content hashes, provenance;
- :mod:`.retrievers` and its backends :mod:`.bm25` (bm25s, the embedded default), :mod:`.dense`
  (sentence-transformers, a local model), :mod:`.hybrid` (reciprocal-rank fusion) and
  :mod:`.postgres` (PostgreSQL full-text search, the default on PostgreSQL);
- :mod:`.evaluation`: recall@k and MRR on a labelled query set;
- :mod:`.config`, :mod:`.augment`: the ``rag:`` section and placing passages into a prompt.
"""
