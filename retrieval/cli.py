"""``prefloop kb``: import documents into a knowledge base, list, search and evaluate retrievers."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from prefloop.errors import ConfigError
from prefloop.tables import fit, table
from prefloop.verbosity import QuietOpt, VerboseOpt, verbosity

console = Console()
kb_app = typer.Typer(help="Knowledge bases: import documents, search them, measure retrievers.", no_args_is_help=True)
ProjectOpt = typer.Option(None, "--project", "-p", help="Project directory (default: the nearest one with prefloop.yaml).")
KbOpt = typer.Option(None, "--kb", help="Knowledge base name (default: rag.kb, 'default').")


def _project(path: Path | None):
    from prefloop.project import Project

    return Project.find(path)


def index_dir(project) -> Path:
    """Where a project keeps its BM25 and dense indexes (rebuilt from the store when stale)."""
    from .context import project_index_dir

    return project_index_dir(project)


def open_retriever(project, name: str, kb: str, *, progress: bool = True):
    from contextlib import nullcontext

    from .retrievers import build_retriever

    # Building a missing or stale index (or loading the dense model) can take a while: say so on stderr.
    status = (Console(stderr=True).status(f"opening the {name} retriever (an index is built if the knowledge base changed)…")
              if progress else nullcontext())
    with status:
        return build_retriever(name, project.store, kb, index_dir=index_dir(project), dense_model=project.config.rag.dense_model)


@kb_app.command("import")
def kb_import(
    path: Path = typer.Argument(..., help="A folder of .txt/.md files, a .txt/.md file, JSONL, CSV, Parquet or a saved HF dataset."),
    kb: str | None = KbOpt,
    chunk_size: int | None = typer.Option(None, help="Units per chunk (default: the knowledge base's, else rag.chunking.size)."),
    chunk_overlap: int | None = typer.Option(None, help="Units shared by consecutive chunks."),
    unit: str | None = typer.Option(None, help="Chunk unit: words, or tokens (with --tokenizer)."),
    tokenizer: str | None = typer.Option(None, help="Tokenizer for unit 'tokens': a model source (e.g. offline:smollm2-135m-instruct)."),
    prune: bool = typer.Option(False, "--prune", help="Remove the knowledge base's documents that this import does not contain."),
    project_dir: Path | None = ProjectOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Import documents (all or nothing; unchanged documents are left as they are)."""
    verbosity(quiet, verbose)
    from pydantic import ValidationError

    from .chunking import Chunking
    from .ingest import import_kb
    from .kb import list_kbs

    project = _project(project_dir)
    name = kb or project.config.rag.kb
    existing = {i.name: i for i in list_kbs(project.store)}.get(name)
    # A new knowledge base is chunked as rag.chunking says, an existing one as before, unless told otherwise.
    chunking = None if existing else project.config.rag.chunking
    overrides = {k: v for k, v in (("size", chunk_size), ("overlap", chunk_overlap), ("unit", unit), ("tokenizer", tokenizer))
                 if v is not None}
    if overrides:
        fields = (Chunking.model_validate(existing.chunking) if existing else project.config.rag.chunking).model_dump()
        if overrides.get("unit") == "words":
            fields["tokenizer"] = None
        try:
            chunking = Chunking.model_validate({**fields, **overrides})
        except ValidationError as exc:
            raise ConfigError("chunking: " + "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
    r = import_kb(project.store, path, kb=name, chunking=chunking, prune=prune)
    console.print(
        f"[green]knowledge base[/] {r.kb!r}: {r.created} new, {r.changed} changed, {r.unchanged} unchanged"
        f"{f', {r.removed} removed' if r.removed else ''}{f', {r.rechunked} re-chunked' if r.rechunked else ''} "
        f"document(s); {r.chunks_written} chunk(s) written; now {r.documents} document(s), {r.chunks} chunk(s)",
        highlight=False,
    )


@kb_app.command("list")
def kb_list(project_dir: Path | None = ProjectOpt) -> None:
    """Knowledge bases with their documents, chunks, chunking and content hash."""
    from .kb import list_kbs

    project = _project(project_dir)
    infos = list_kbs(project.store)
    if not infos:
        console.print("no knowledge bases yet: `prefloop kb import PATH --kb NAME`")
        return
    from .display import visible

    t = table("knowledge bases", [("name", "text"), ("documents", "number"), ("chunks", "number"), ("chunking", "text"),
                                  ("content hash", "id")])
    for i in infos:
        c = i.chunking
        chunking = f"{c.get('size')} {c.get('unit')}, overlap {c.get('overlap')}" + (f" ({c['tokenizer']})" if c.get("tokenizer") else "")
        t.add_row(visible(i.name), str(i.documents), str(i.chunks), visible(chunking), i.content_hash[:12])
    console.print(fit(t))


@kb_app.command("search")
def kb_search(
    query: str = typer.Argument(..., help="What to look for."),
    k: int | None = typer.Option(None, "-k", "--k", help="Passages to show (default: rag.k)."),
    retriever: str | None = typer.Option(None, "--retriever", "-r", help="auto, bm25, dense, hybrid or postgres (default: rag.retriever)."),
    kb: str | None = KbOpt,
    project_dir: Path | None = ProjectOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """The best passages for a query, with score and source."""
    from .display import visible

    shown = verbosity(quiet, verbose)
    project = _project(project_dir)
    rag = project.config.rag
    r = open_retriever(project, retriever or rag.retriever, kb or rag.kb, progress=shown.progress)
    passages = r.search(query, k or rag.k)
    t = table(f"{r.name} · knowledge base {r.kb.name!r}", [("rank", "number"), ("score", "number"), ("source", "text"), ("text", "text")])
    for p in passages:
        src = f"{p.source or p.document_key} #{p.position}"
        t.add_row(str(p.rank), f"{p.score:.4f}", visible(src, max_chars=60), visible(p.text, max_chars=240))
    if not passages:
        console.print(visible(f"no passage matches {query!r}"))
        return
    console.print(fit(t))


@kb_app.command("eval")
def kb_eval(
    queries: Path = typer.Argument(..., help="JSONL: 'query' and 'relevant' (document keys or sources)."),
    k: int = typer.Option(5, "-k", "--k", help="Passages per query."),
    retriever: list[str] = typer.Option([], "--retriever", "-r", help="Retriever to measure (repeatable; default: every one available)."),
    kb: str | None = KbOpt,
    project_dir: Path | None = ProjectOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Recall@k, MRR and hit@k of each retriever on a labelled query set."""
    from .evaluation import check_labels, evaluate, read_queries
    from .retrievers import RETRIEVERS

    shown = verbosity(quiet, verbose)
    project = _project(project_dir)
    name = kb or project.config.rag.kb
    labelled = read_queries(queries)
    check_labels(project.store, name, labelled)
    names = retriever or [n for n in RETRIEVERS if n != "postgres" or project.store.dialect == "postgresql"]
    t = table(f"retrieval on {len(labelled)} queries · knowledge base {name!r}",
              [("retriever", "text"), (f"recall@{k}", "number"), ("MRR", "number"), (f"hit@{k}", "number"), ("ms/query", "number")])
    for n in names:
        try:
            r = open_retriever(project, n, name, progress=shown.progress)
        except ConfigError as exc:
            if retriever:  # asked for by name: its failure is the answer
                raise
            console.print(f"[yellow]skipped[/] {n}: {exc.message}", highlight=False)
            continue
        s = evaluate(r, labelled, k)
        t.add_row(n, f"{s.recall:.3f}", f"{s.mrr:.3f}", f"{s.hit_rate:.3f}", f"{1000 * s.seconds_per_query:.1f}")
    console.print(fit(t))


@kb_app.command("delete")
def kb_delete(
    name: str = typer.Argument(..., help="The knowledge base to delete, with its documents and chunks."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    project_dir: Path | None = ProjectOpt,
) -> None:
    """Delete a knowledge base with its documents, chunks and index files."""
    from .display import visible
    from .indexes import drop_indexes
    from .kb import delete_kb, kb_info

    project = _project(project_dir)
    info = kb_info(project.store, name)
    if not yes and not typer.confirm(f"delete knowledge base {name!r} ({info.documents} documents, {info.chunks} chunks)?"):
        raise typer.Exit(1)
    delete_kb(project.store, name)
    drop_indexes(index_dir(project), info.id)
    msg = visible(f"deleted knowledge base {name!r}: {info.documents} document(s), {info.chunks} chunk(s)")
    console.print(msg)


def register(app: typer.Typer) -> None:
    app.add_typer(kb_app, name="kb")
