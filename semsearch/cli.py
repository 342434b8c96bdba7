"""The `semsearch` command: parse, call the library, print. No logic of its own."""
from __future__ import annotations

import errno
import json
import logging
import os
import shlex
import sys
from collections import Counter

import click

from .errors import NotFound, OutOfSpace, SemsearchError
from .models import VARIANT_FILES
from .search import FEEDBACK_WEIGHT
from .validation import DEFAULT_K, MAX_QUERIES, MODES as MODE_NAMES, doc_id, key_value_pairs, where_conditions

VARIANTS = click.Choice(list(VARIANT_FILES))
DEVICES = click.Choice(["auto", "cpu", "cuda"])


def complete_collections(ctx, param, incomplete: str) -> list[str]:
    """Shell completion of a collection NAME: those under --home (or SEMSEARCH_HOME), as
    `semsearch list` gives them (`eval "$(_SEMSEARCH_COMPLETE=bash_source semsearch)"`)."""
    from .collection import list_collections

    try:
        return [n for n in list_collections(ctx.find_root().params.get("home")) if n.startswith(incomplete)]
    except (OSError, SemsearchError):  # an unreadable or invalid home: nothing to offer
        return []
MODES = click.Choice(list(MODE_NAMES))


class Group(click.Group):
    """Every failure becomes one line on stderr and the exit code its error class names
    (errors.py); anything unexpected is one line too, with a hint to see the traceback."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as exc:
            raise OneLineError.of(exc) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            raise OneLineError.of(exc) from None
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt as exc:  # a long ingest says what it stored (ingest.Writer.session)
            click.echo(f"interrupted: {exc}" if str(exc) else "interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:  # the reader went away (`| head`): end quietly, as a C tool would
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            ctx.exit(141)  # 128 + SIGPIPE, what a shell reports for such a tool
        except Exception as exc:  # noqa: BLE001 - the last place to keep a traceback off the screen
            if os.environ.get("SEMSEARCH_DEBUG"):
                raise
            click.echo(f"error: {describe(exc)}", err=True)
            ctx.exit(exit_code(exc))


class OneLineError(click.ClickException):
    """A click usage error shown as one ``error:`` line (click prints a usage block);
    ``--help`` still shows the usage."""

    @classmethod
    def of(cls, exc: click.ClickException) -> click.ClickException:
        if isinstance(exc, (cls, getattr(click.exceptions, "NoArgsIsHelpError", ()))):
            return exc  # bare `semsearch`: the help is the answer
        one = cls(exc.format_message())
        one.exit_code = exc.exit_code
        return one

    def show(self, file=None) -> None:
        lines = self.format_message().strip().splitlines()
        click.echo(f"error: {lines[0] if lines else 'invalid usage'}", err=True)


def exit_code(exc: BaseException) -> int:
    """Ours know theirs; a full disk met outside a collection (an export, `embed --out`) is
    OutOfSpace's 74, as inside one; anything else 1."""
    if isinstance(exc, SemsearchError):
        return exc.exit_code
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutOfSpace.exit_code
    return 1


def describe(exc: BaseException) -> str:
    """One line for any error: ours say what to do; an OSError names its file."""
    if isinstance(exc, SemsearchError):
        return exc.one_line()
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    text = str(exc).strip().splitlines()
    name = type(exc).__name__
    return f"unexpected {name}: {text[0] if text else ''} (SEMSEARCH_DEBUG=1 shows where)"


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="semsearch")
@click.option("--home", envvar="SEMSEARCH_HOME", default=None,
              help="Folder that holds collections [env: SEMSEARCH_HOME; default: ./indexes, "
                   "relative to the current folder].")
@click.pass_context
def cli(ctx, home):
    """Embed text and search your documents by meaning."""
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    for noisy in ("filelock",):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    ctx.obj = {"home": home}


def main():
    cli(prog_name="semsearch")


# -- models -----------------------------------------------------------------------------------
@cli.command()
@click.argument("source", required=False)
@click.option("--out", type=click.Path(file_okay=False),
              help="Write the model folder here (a new or empty folder) instead of the cache; "
                   "use it with --model FOLDER.")
@click.option("--optimize", type=click.Choice(["O1", "O2", "O3", "none"]), default="none", show_default=True,
              help="Graph optimisation level (optimum's) for model.onnx and the int8 variant made from it. "
                   "none is fastest here: ONNX Runtime optimises the graph when it loads it. "
                   "The fp16 variant always starts from O2.")
@click.option("--quantize", type=click.Choice(["int8", "none"]), default="int8", show_default=True,
              help="Also write an int8 (dynamically quantised) variant for CPUs.")
@click.option("--fp16", is_flag=True, help="Also write an fp16 variant for GPUs.")
@click.option("--force", is_flag=True, help="Export again even if cached.")
def export(source, out, optimize, quantize, fp16, force):
    """Export SOURCE (HF folder or hub id; default: the packaged model) to ONNX.

    Writes model.onnx, model_int8.onnx (and model_fp16.onnx with --fp16) and manifest.json,
    each validated against the PyTorch model, into the cache (SEMSEARCH_CACHE, default
    ~/.cache/semsearch), and prints the folder. Needs the export extra."""
    from .export import export as run_export

    folder = run_export(source, out=out, optimize=optimize, quantize=quantize, fp16=fp16, force=force)
    click.echo(str(folder))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models(as_json):
    """List exported models in the cache (SEMSEARCH_CACHE, default ~/.cache/semsearch)."""
    from .models import cache_dir, cached_models

    found = cached_models()
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo(f"no exported models in {cache_dir()} (run `semsearch export`)")
    for m in found:
        variants = ", ".join(
            f"{name} (min cos {v['min_cosine']:.4f})" if v.get("validated") else f"{name} (not validated)"
            for name, v in m["variants"].items())
        click.echo(f"{m['name']}  dim={m['dim']} max_length={m['max_length']} pooling={m['pooling']}  {variants}")
        click.echo(f"    {m['folder']}")


@cli.command()
@click.argument("texts", nargs=-1)
@click.option("--file", "file_", type=click.Path(dir_okay=False, allow_dash=True),
              help="Read texts from FILE: one per line, or JSONL with a `text` field; - for stdin.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "npy"]), default="jsonl", show_default=True,
              help="JSONL lines of text and embedding, or one .npy array (needs --out; - for stdout).")
@click.option("--out", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write here instead of stdout (- is stdout).")
@click.option("--model", default=None, help="Model name, HF folder, exported folder or hub id.")
@click.option("--variant", type=VARIANTS, default="fp32", show_default=True,
              help="Exported variant: fp32 exact, int8 faster on CPUs, fp16 for GPUs.")
@click.option("--device", type=DEVICES, default="auto", show_default=True,
              help="auto: CUDA when it attaches, else the CPU.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=None,
              help="Texts per model run [default: the device's token budget; 32 on the CPU].")
@click.option("--kind", type=click.Choice(["query", "passage"]), default=None,
              help="Apply the model's query/passage prefix.")
def embed(texts, file_, fmt, out, model, variant, device, batch_size, kind):
    """Embed TEXTS (or --file, or stdin) and print JSONL or write .npy.

    Vectors are written a window of texts at a time as they are embedded, so memory holds a
    few windows of them however many texts there are; a file given with --out appears
    whole when the run ends (an interrupted run leaves none)."""
    import numpy as np

    from .embedder import Embedder
    from .files import NEW_FILE_MODE, atomic_file

    items = list(texts) or read_texts(file_)
    if fmt == "npy" and not out:
        raise click.UsageError("--format npy needs --out FILE")
    embedder = Embedder.load(model, variant=variant, device=device)
    windows = embedder.stream_counted(items, kind=kind, batch_size=batch_size, progress=len(items) > 256)
    truncated = done = 0
    # at OUT itself (np.save(path) would add .npy), whole or not at all; - (or none) is stdout
    binary = fmt == "npy"
    to_file = atomic_file(out, "wb" if binary else "w", permissions=NEW_FILE_MODE,
                          **({} if binary else {"encoding": "utf-8"})) if out and out != "-" else None
    with to_file or click.open_file("-", "wb" if binary else "w", encoding=None if binary else "utf-8") as stream:
        if fmt == "npy":
            np.lib.format.write_array_header_1_0(stream, {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                "shape": (len(items), embedder.dim)})
        for vectors, _, cut in windows:
            truncated += cut
            if fmt == "npy":
                stream.write(vectors.tobytes())
            else:
                stream.writelines(json.dumps({"text": text, "embedding": [round(float(x), 7) for x in vector]}) + "\n"
                                  for text, vector in zip(items[done:done + len(vectors)], vectors))
            done += len(vectors)
    if truncated:
        click.echo(f"note: {truncated} text(s) cut at {embedder.max_length} tokens", err=True)
    if fmt == "npy":
        click.echo(f"wrote {len(items)}x{embedder.dim} embeddings to {'stdout' if out == '-' else out}", err=True)


def read_texts(file_: str | None) -> list[str]:
    """Texts from a file (lines, or records of a .jsonl by the one record rule) or from
    stdin when it is piped."""
    from .loaders import decode_text, read_records, readable_file

    if file_ is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise click.UsageError("give texts as arguments, with --file, or on stdin")
        data = sys.stdin.buffer.read()
    elif file_ != "-" and not readable_file(file_):
        raise NotFound(f"no such file: {file_}")  # as a missing .jsonl or `index` path: exit 3
    elif str(file_).endswith(".jsonl"):
        return [record_of(rec, file_, n).text for n, rec in enumerate(read_records(file_), 1)]
    else:
        with click.open_file(file_, "rb") as handle:
            data = handle.read()
    text, replaced = decode_text(data)  # the encoding rule `index` reads files by
    if replaced:
        click.echo(f"note: {replaced} undecodable byte(s) in {file_ or 'stdin'} replaced with U+FFFD", err=True)
    return [line for line in text.splitlines() if line.strip()]


def record_of(rec: dict, file_, number: int):
    """A JSONL record read by the one record rule (loaders.parse_record), or an error."""
    from .errors import InvalidInput
    from .loaders import parse_record

    parsed = parse_record(rec)
    if isinstance(parsed, str):
        raise InvalidInput(f"{file_} record {number}: {parsed}")
    return parsed


# -- collections ------------------------------------------------------------------------------
@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--name", required=True, shell_complete=complete_collections,
              help="Collection name (under --home) or path.")
@click.option("--glob", multiple=True, metavar="PATTERN",
              help="Only files in folders matching this pattern (its path under the folder, or its "
                   "name), e.g. '*.md'; repeat it for several (a file matching any is taken). A file "
                   "of a type with no reader that it matches ('*.py', '*.log') is read as plain text.")
@click.option("--exclude", multiple=True, metavar="PATTERN",
              help="Leave out files and folders matching this pattern (not walked into): a name "
                   "('node_modules', '*.log'), a path under the folder ('drafts/*.md'; '/build': "
                   "at its top only), or an absolute path; a trailing / matches folders only "
                   "('build/'). Repeatable. "
                   "Documents that --glob or --exclude leave out are neither added nor removed.")
@click.option("--gitignore", is_flag=True,
              help="Leave out what git ignores: the .gitignore files in and above the folders (up to "
                   "the repository's root) and .git/info/exclude; not the global excludes file. "
                   "A folder outside a repository still takes its .gitignore files.")
@click.option("--model", default=None, help="Model for a new collection (default: all-MiniLM-L6-v2).")
@click.option("--variant", type=click.Choice(["fp32", "int8"]), default=None,
              help="Model variant for a new collection [default: fp32].")
@click.option("--index", "index_spec", default=None,
              help="Index for a new collection: auto (exact below 50,000 chunks, HNSW above), flat, "
                   "hnsw, ivf, ivfpq, a faiss factory string, or ondisk for corpora beyond RAM (no index in memory: searched by an exact "
                   "scan of the store until `semsearch build NAME` makes its on-disk IVF) [default: auto].")
@click.option("--chunk-tokens", type=int, default=None,
              help="Tokens per chunk for a new collection, at most the model's max length - 2 "
                   "[default: that maximum, 254 for the default model].")
@click.option("--overlap", type=int, default=None,
              help="Tokens shared by neighbouring chunks, for a new collection [default: 32].")
@click.option("--keep-missing", is_flag=True,
              help="Keep documents whose files are gone from PATHS (by default they are removed).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Load, chunk and embed on Ray (the ray extra). --ray alone starts a local Ray for the "
                   "run; ADDRESS joins a running cluster: auto, or its GCS host:port (run on a node "
                   "of the cluster: Ray Data does not work through Ray Client, ray://). "
                   "Put it after PATHS.")
@click.option("--watch", is_flag=True,
              help="Keep running: poll PATHS and sync again whenever a file is added, changed or "
                   "removed (a line for each pass that changed something); Ctrl-C stops.")
@click.option("--every", type=float, default=None, metavar="SECONDS",
              help="With --watch: seconds between polls, each a stat of every file [default: 2].")
@click.option("--dry-run", is_flag=True,
              help="Say what this run would add (+), update (~), copy from a moved file (reused) and "
                   "remove (-), a line each, and what it would skip; the files are read, but no model "
                   "is loaded and nothing is written.")
@click.pass_context
def index(ctx, paths, name, glob, exclude, gitignore, model, variant, index_spec, chunk_tokens, overlap,
          keep_missing, ray_address, watch, every, dry_run):
    """Index files and folders into collection NAME, created if needed.

    Folders are walked recursively (hidden files skipped); .txt .md .markdown (YAML or TOML
    front matter as metadata) .org .adoc (their header as metadata) .rst .html .json .jsonl
    .csv .tsv .docx .pptx .odt .odp .epub, Jupyter notebooks (.ipynb: the cells, not the
    outputs), e-mail (.eml; .mbox and Maildir folders: a document per message), and .pdf
    with the pdf extra; text not in UTF-8 (or UTF-16 with its mark) is read as
    Windows-1252 when it looks like it. A file of any other type (source code, logs,
    configs) is read as plain text when named in PATHS or matched by a --glob (its type: its
    extension, or "text"); a walk without --glob skips them. Collections (folders holding a
    store.sqlite) are not walked into. Run it again to embed only new or changed files and
    remove documents whose files are gone. An existing collection keeps its settings:
    giving different ones is an error.

    With --watch it then keeps the collection in sync: every --every seconds it stats the
    files (reading none) and, when one was added, changed or removed, reads only those (and
    removes the documents of those gone), printing the local time and what it added,
    updated, removed and newly skipped (a file skipped is named once, not every pass).
    A file caught half-written is indexed
    again at the next poll after it changes. A PATH that disappears pauses the syncing until
    it is back (its documents stay). Other writers (`semsearch serve`, `add`) write to the
    collection while it watches. Ctrl-C or SIGTERM between passes stops it (exit 0); during
    a pass they stop it as they stop `index` (what it stored stays; exit 130).

    Without PATHS it indexes again what the collection was indexed from, each path with
    the --glob, --exclude and --gitignore it was last indexed with (`info` lists them):
    `semsearch index --name notes` is the whole re-sync, for a scheduled job too."""
    if not paths and ray_address and os.path.exists(ray_address):  # `index --ray docs --name x`
        raise click.UsageError(f"Missing argument 'PATHS...' (--ray took {ray_address!r} as its address: "
                               "put --ray after the paths).")
    if not paths and (glob or exclude or gitignore):
        raise click.UsageError("--glob, --exclude and --gitignore choose files under PATHS; without PATHS each "
                               f"source is read with the selection it was last indexed with (`semsearch info {name}`)")
    runs = [{"paths": paths, "glob": glob, "exclude": exclude, "gitignore": gitignore}] if paths else \
        index_sources(ctx, name)
    if len(runs) > 1 and watch:
        raise click.UsageError(f"{name}'s sources were indexed with {len(runs)} different selections and "
                               "--watch takes one: give its PATHS and options")
    for run in runs:
        if not paths:
            click.echo(f"{name}: indexing {source_line(run)}", err=True)
        index_run(ctx, name, **run, model=model, variant=variant, index_spec=index_spec,
                  chunk_tokens=chunk_tokens, overlap=overlap, keep_missing=keep_missing,
                  ray_address=ray_address, watch=watch, every=every, dry_run=dry_run)


def index_sources(ctx, name) -> list[dict]:
    """`index --name NAME` without PATHS: the collection's sources, as runs (source_runs)."""
    from .collection import source_runs
    from .errors import NoSuchCollection

    try:
        runs = source_runs(name, ctx.obj["home"])
    except NoSuchCollection:
        raise click.UsageError("Missing argument 'PATHS...': the files and folders to index (without PATHS, "
                               "an existing collection's sources are indexed again)") from None
    gone = [p for run in runs for p in run["paths"] if not os.path.lexists(p)]
    if len(gone) == sum(len(run["paths"]) for run in runs):
        raise NotFound(f"every source of {name} is gone ({', '.join(map(printable, gone))}): give the PATHS to index")
    for path in gone:  # an unmounted share: said, its documents kept, the rest synced
        click.echo(f"warning: source {printable(path)} is gone, its documents kept (back up, or "
                   f"`semsearch delete {name} --path {shlex.quote(printable(path))}` forgets it)", err=True)
    runs = [{**run, "paths": [p for p in run["paths"] if p not in gone]} for run in runs]
    return [run for run in runs if run["paths"]]


def source_line(source: dict) -> str:
    """A source (or a run of them) as the command line would give it: paths, then options."""
    paths = source["paths"] if "paths" in source else [source["path"]]
    words = [*map(shlex.quote, map(printable, paths)),
             *(f"--glob {shlex.quote(g)}" for g in source["glob"]),
             *(f"--exclude {shlex.quote(e)}" for e in source["exclude"]),
             *(["--gitignore"] if source["gitignore"] else [])]
    return " ".join(words)


def index_run(ctx, name, paths, glob, exclude, gitignore, model, variant, index_spec, chunk_tokens, overlap,
              keep_missing, ray_address, watch, every, dry_run) -> None:
    """One `index` run over PATHS with one selection (a dry run, a watch, or on Ray)."""
    from .collection import index_files
    from .distributed.cluster import terminate_as_interrupt

    if every is not None and not watch:
        raise click.UsageError("--every is the time between --watch's polls: give --watch too")
    if watch and ray_address is not None:
        raise click.UsageError("--watch does not run on Ray: each pass syncs a few changed files, on "
                               "one model kept loaded here, where Ray would start its workers every pass")
    if dry_run and watch:
        raise click.UsageError("--dry-run says what one run would do: not with --watch")
    if dry_run:
        from .collection import plan_files
        plan = plan_files(name, paths, glob=glob, exclude=exclude, gitignore=gitignore,
                          remove_missing=not keep_missing, model=model,
                          variant=variant, index=index_spec, chunk_tokens=chunk_tokens, overlap=overlap,
                          home=ctx.obj["home"])
        echo_index_plan(name, plan)
        return
    if watch:
        watch_index(ctx, paths, name, keep_missing, every, glob=glob, exclude=exclude, gitignore=gitignore,
                    model=model, variant=variant, index=index_spec, chunk_tokens=chunk_tokens, overlap=overlap)
        return
    kwargs = {}
    if ray_address is not None:
        from .distributed import index_files
        kwargs["address"] = None if ray_address == "local" else ray_address
    with terminate_as_interrupt():  # a scheduler's stop unwinds as Ctrl-C, saying what was stored
        coll, report = index_files(name, paths, glob=glob, exclude=exclude, gitignore=gitignore,
                                   remove_missing=not keep_missing, progress=True, model=model, variant=variant,
                                   index=index_spec, chunk_tokens=chunk_tokens, overlap=overlap,
                                   home=ctx.obj["home"], **kwargs)
    echo_index_report(coll, report)


def echo_index_plan(name: str, plan) -> None:
    """`index --dry-run`: the counts, then a line a document to add, update or remove."""
    made = "" if plan.exists else "; the collection would be created"
    copied = f"; {len(plan.reused)} of those added or updated reused (moved or copied: not embedded)" \
        if plan.reused else ""
    click.echo(f"{name} (dry run, nothing written): would add {len(plan.new)}, update {len(plan.changed)}, "
               f"remove {len(plan.removed)}; unchanged {plan.unchanged}, skipped {len(plan.skipped)}{copied}{made}")
    reused = set(plan.reused)
    for mark, keys in (("+", plan.new), ("~", plan.changed), ("-", plan.removed)):
        for key in keys:
            click.echo(f"{mark} {printable(key)}" + ("  (reused)" if key in reused else ""))
    for source, reason in sorted(plan.skipped):
        click.echo(f"  skipped {printable(source)}: {printable(reason)}")



def echo_index_report(coll: dict, report) -> None:
    """What an `index` run did: counts, then the skipped files by reason, a few named (not
    those of a type the walk does not take: their line says how many of which)."""
    from .loaders import UNSUPPORTED

    click.echo(
        f"{coll['name']}: added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
        f"removed {report.removed}, skipped {len(report.skipped)};{report.reused_note()} {report.chunks} chunks in "
        f"{report.seconds:.1f}s ({coll['documents']} documents in the collection)")
    for reason, count in skip_counts(report.skipped):
        click.echo(f"  skipped {count}: {printable(reason)}")
    named = sorted(s for s in report.skipped if not s[1].startswith(f"{UNSUPPORTED} "))
    shown = named[:5]  # which files, a few: sorted (Ray reports them in any order)
    for source, reason in shown:
        click.echo(f"    {printable(source)}: {printable(reason)}")
    if len(named) > len(shown):
        click.echo(f"    and {len(named) - len(shown)} more")
    if report.replaced_chars:
        click.echo(f"  {report.replaced_chars} undecodable byte(s) replaced with U+FFFD")
    if report.left_behind:
        click.echo(f"note: {report.left_behind} document(s) whose files were moved here are still in the "
                   f"collection under their old paths (outside the paths indexed); "
                   f"`semsearch delete {coll['name']} --missing` removes those whose files are gone")
    if coll.get("notice"):
        click.echo(f"note: {coll['notice']}")


def skip_counts(skipped: list) -> list[tuple[str, int]]:
    """(reason, files) of a run's skips, most first; the files of types a walk takes only
    with a --glob in one, by type, saying how to read them (as text)."""
    from .loaders import UNSUPPORTED

    counts: Counter = Counter()
    types: Counter = Counter()
    for _, reason in skipped:
        if reason.startswith(f"{UNSUPPORTED} "):
            types[reason[len(UNSUPPORTED) + 1:]] += 1
            reason = UNSUPPORTED
        counts[reason] += 1
    if not types:
        return most_first(counts)
    ranked = most_first(types)
    listed = ", ".join(f"{t} {n}" for t, n in ranked[:6]) + (f", {len(ranked) - 6} more types" if len(ranked) > 6 else "")
    example = next((f"*{t}" for t, _ in ranked if t.startswith(".")), "NAME")
    hint = f"{UNSUPPORTED} ({listed}): --glob '{example}' reads them as text (a --glob takes only what it matches)"
    return [(hint if reason == UNSUPPORTED else reason, n) for reason, n in most_first(counts)]


def most_first(counts: Counter) -> list[tuple[str, int]]:
    """Counts, most first, ties by name: the same lines whatever order the skips came in
    (a walk's skips come first on Ray, in file order here)."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def watch_index(ctx, paths, name, keep_missing, every, **settings) -> None:
    """`index --watch`: the first pass reported as `index` reports, each later pass that
    changed something in one line (its new skips named below it), and a line when stopped."""

    from .watch import DEFAULT_EVERY, watch_files

    def on_pass(done) -> None:
        coll, report = done.collection, done.report
        if done.number == 1:
            echo_index_report({"name": coll.name, "documents": coll.count(), "notice": coll.notice()}, report)
            click.echo(f"watching for changes every {every or DEFAULT_EVERY:g}s; Ctrl-C stops", err=True)
        elif done.changed:
            click.echo(done.line())
            for source, reason in sorted(done.new_skips):
                click.echo(f"    {printable(source)}: {printable(reason)}")

    watched = watch_files(name, paths, every=DEFAULT_EVERY if every is None else every, on_pass=on_pass,
                          remove_missing=not keep_missing, progress=True, signals=True,
                          home=ctx.obj["home"], **settings)
    click.echo(f"{watched.name}: stopped watching after {watched.passes} sync pass(es); "
               f"{watched.documents} documents in the collection")


@cli.command()
@click.argument("name", shell_complete=complete_collections)
@click.option("--shards", type=click.Path(file_okay=False), default=None,
              help="Folder for the Parquet shards (on a cluster, one every node can read); they "
                   "may be deleted after the build [default: the collection's shards/ folder].")
@click.option("--memory-budget", type=click.FloatRange(min=1), default=None,
              help="MiB of memory (page cache) for the index: IVF-Flat if all vectors fit, else "
                   "IVF-PQ re-ranked with the exact vectors [default: no limit, IVF-Flat].")
@click.option("--spec", default="auto", show_default=True,
              help="auto (from --memory-budget), or IVF<n>,Flat or IVF<n>,PQ<m> (faiss strings).")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Join a running Ray cluster: auto, or its GCS host:port (not ray://) "
                   "[default: start a local Ray for the build].")
@click.pass_context
def build(ctx, name, shards, memory_budget, spec, ray_address):
    """Build NAME's on-disk IVF index for collections beyond RAM (the ray extra).

    Vectors are exported as Parquet shards, an IVF is trained on a sample, filled per shard
    in Ray tasks and merged on disk; searches memory-map it. Writes made after a build are
    searched too (kept in memory until the next build); re-run to fold them in. A collection
    created with `index --index ondisk` is searched by an exact scan until its first build."""
    from .distributed.build import build_collection

    out = build_collection(name, home=ctx.obj["home"], shards_dir=shards, address=ray_address,
                           memory_budget_mb=memory_budget, spec=spec, log=lambda m: click.echo(m, err=True))
    click.echo(f"{name}: {out['ntotal']:,} vectors in an on-disk {out['spec']} ({out['folder']}), nprobe "
               f"{out['nprobe']}: recall@10 {out['recall_at_10']:.3f} against exact search")


def where_option(what: str = "Only documents that match"):
    """The one --where of search, similar, documents and delete: validation.where_conditions' grammar."""
    return click.option(
        "--where", multiple=True, metavar="COND",
        help=f"{what} KEY=VALUE (repeatable: all must hold); also KEY!=VALUE, KEY>VALUE, KEY>=VALUE, "
        "KEY<VALUE, KEY<=VALUE (numbers as numbers, other text in character order: date>=2024-01), "
        "or a JSON object ('{\"team\": {\"$in\": [\"a\", \"b\"]}}'). A list value matches when "
        "one of its items does. source=FILE and id=ID match a document's file and id; "
        "metadata.KEY names a metadata key those hide (metadata.source=wiki).")


@cli.command()
@click.argument("name", shell_complete=complete_collections)
@click.argument("query", required=False)
@click.option("-k", "k", type=int, default=DEFAULT_K, show_default=True, help="Hits per query (1 to 10,000).")
@click.option("--mode", type=MODES, default="hybrid", show_default=True,
              help="dense: by meaning (vectors); lexical: BM25 over words; hybrid: both, fused.")
@where_option()
@click.option("--docs", is_flag=True, help="One hit per document.")
@click.option("--min-score", type=float, default=None,
              help="Drop hits scoring below this: dense, cosine (-1..1); lexical, BM25; hybrid, "
                   "share of the best possible fused score (0..1).")
@click.option("--queries", "queries_file", type=click.Path(dir_okay=False, allow_dash=True),
              help="Answer every line of FILE (or the text of each record of a .jsonl; - for stdin); "
                   "prints one JSON line per query.")
@click.option("--rrf-k", type=int, default=60, show_default=True,
              help="Hybrid: reciprocal rank fusion constant (larger: top ranks count less).")
@click.option("--weights", default="1,1", show_default=True, help="Hybrid: dense,lexical weights.")
@click.option("--feedback", type=float, default=FEEDBACK_WEIGHT, show_default=True,
              help="Hybrid: pseudo-relevance feedback weight (0 = plain RRF).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def search(ctx, name, query, k, mode, where, docs, min_score, queries_file, rrf_k, weights, feedback, as_json):
    """Search collection NAME for QUERY."""
    from .collection import Collection

    filters = where_conditions(where, "--where")
    if query is not None and queries_file:
        raise click.UsageError("give a QUERY or --queries FILE, not both")
    try:
        dense_w, lexical_w = (float(w) for w in weights.split(","))
    except ValueError:
        raise click.UsageError(f"--weights expects two numbers like 1,0.5, got {weights!r}") from None
    with Collection.open(name, home=ctx.obj["home"]) as coll:
        options = dict(k=k, where=filters, mode=mode, docs=docs, min_score=min_score,
                       rrf_k=rrf_k, weights=(dense_w, lexical_w), feedback_weight=feedback,
                       highlight=bool(as_json or queries_file) or bold())  # plain text shows none
        if queries_file:
            queries = read_texts(queries_file)
            for start in range(0, len(queries), MAX_QUERIES):  # a file may hold more than one call takes
                part = queries[start:start + MAX_QUERIES]
                for text, hits in zip(part, coll.search(part, **options)):
                    click.echo(json.dumps({"query": text, "hits": [h.to_dict() for h in hits]}, ensure_ascii=False))
            return
        if query is None:
            raise click.UsageError("give a QUERY or --queries FILE")
        hits = coll.search(query, **options)
    echo_hits(hits, as_json, mode)


@cli.command()
@click.argument("name", shell_complete=complete_collections)
@click.argument("doc", metavar="ID")
@click.option("-k", "k", type=int, default=DEFAULT_K, show_default=True, help="Hits (1 to 10,000).")
@where_option()
@click.option("--chunks", is_flag=True, help="Rank passages (several may come from one document), not documents.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, as `search --json` does.")
@click.pass_context
def similar(ctx, name, doc, k, where, chunks, as_json):
    """Print the documents of collection NAME most like its document ID, ID left out.

    Nearest by meaning (dense search) to the mean of ID's passage vectors; a hit's score is
    its cosine similarity to that. {IDS_ARE}"""
    from .collection import Collection

    with Collection.open(name, home=ctx.obj["home"]) as coll:
        doc = file_document_ids(coll, [doc_id(doc, "ID")])[doc]
        hits = coll.similar(doc, k=k, where=where_conditions(where, "--where"), docs=not chunks)
    echo_hits(hits, as_json, "dense")


def file_document_ids(coll, ids: list[str]) -> dict[str, str]:
    """Each ID given -> the id to read: itself, or, for one the collection lacks that names a
    file here (relative, ~, through a link), that file's document id (its real path, as
    `index` stores it): `get notes plan.md` from the notes folder."""
    held = {d.id for d in coll.documents(ids=ids, text=False)}
    out = {key: key for key in ids}
    for key in ids:
        if key not in held and os.path.exists(os.path.expanduser(key)):
            out[key] = os.path.realpath(os.path.expanduser(key))
    return out


def echo_hits(hits: list, as_json: bool, mode: str) -> None:
    """Ranked hits: indented JSON, or a line each with a preview of its passage, the query's
    words in it in bold on a terminal (not with NO_COLOR set, nor into a pipe or file)."""
    if as_json:
        click.echo(json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=2))
        return
    if not hits:
        click.echo("no results")
    marked = bold()
    for rank, hit in enumerate(hits, 1):
        sides = ", ".join(f"{name} {value:.4f}" for name, value in (("cosine", hit.cosine), ("bm25", hit.bm25))
                          if value is not None and mode == "hybrid")
        click.echo(f"{rank:2d}. {hit.score:.4f}  {printable(hit.id)}  (chunk {hit.chunk}"
                   + (f"; {sides})" if sides else ")"))
        click.echo("    " + preview(hit.text, hit.highlights if marked else []))


BOLD, NORMAL = "\033[1m", "\033[22m"


def bold() -> bool:
    """Whether printed hits show the query's words in bold: on a terminal, unless NO_COLOR
    is set (no-color.org)."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def preview(text: str, spans: list, width: int = 200) -> str:
    """The start of a passage on one line: whitespace runs as one space, printable(), cut at
    ``width`` characters with '…'; the characters of ``spans`` (sorted [start, end) of
    ``text``) in bold. Where the first span lies past half the width, the line starts at a
    word a quarter of the width before it, after a '…': the match is what the reader wants."""
    lead = ""
    if spans and spans[0][0] > width // 2:
        cut = text.rfind(" ", 0, spans[0][0] - width // 4) + 1
        text, spans, lead = text[cut:], [[a - cut, b - cut] for a, b in spans], "…"
    out, shown, span, gap, bolded = [lead], len(lead), 0, False, False
    for i, char in enumerate(text):
        if char.isspace():
            gap = shown > 0
            continue
        while span < len(spans) and spans[span][1] <= i:
            span += 1
        marked = span < len(spans) and spans[span][0] <= i
        for piece, bold in ([(" ", False)] if gap else []) + [(printable(char), marked)]:
            if bold != bolded:
                out.append(BOLD if bold else NORMAL)
                bolded = bold
            if shown + len(piece) > width:
                return "".join(out) + piece[:width - shown] + (NORMAL if bolded else "") + "…"
            out.append(piece)
            shown += len(piece)
        gap = False
    return "".join(out) + (NORMAL if bolded else "")


def printable(text: str) -> str:
    """Text safe for a terminal: control characters (escape sequences) shown as \\x.. codes."""
    return "".join(c if c.isprintable() or c in "\t" else repr(c)[1:-1] for c in text)


STORED_TEXT = ("A document's text is rebuilt from its stored chunks: whitespace between chunks "
               "comes back as as many spaces, whitespace at its end is dropped.")
IDS_ARE = ("Ids are what `search --json` shows as id: a file's absolute path (a relative one "
           "works too), PATH#ID for a record of an indexed .jsonl, the id given to `add` (--id, a "
           "record's id) or generated.")


@cli.command()
@click.argument("name", shell_complete=complete_collections)
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object a line: id, text, source (null: added as text), metadata, "
                   "chunks, added_at (Unix time).")
@click.pass_context
def get(ctx, name, ids, as_json):
    """Print the documents of collection NAME with these IDs, in the order given.

    Each is a header line (id, source or "(text)", chunks, when it was added in local time,
    metadata as JSON) and its text below, indented. An ID the collection lacks is named in
    an error line after the others are printed (exit 3).

    {STORED_TEXT} {IDS_ARE}"""
    from .collection import Collection
    from .errors import NoSuchDocument

    # one id given twice is printed once; a bad one is named by its place (ID 2)
    wanted = list(dict.fromkeys(doc_id(value, f"ID {n}") for n, value in enumerate(ids, 1)))
    with Collection.open(name, home=ctx.obj["home"]) as coll:
        stored = file_document_ids(coll, wanted)
        found = {doc.id: doc for doc in coll.documents(ids=list(stored.values()))}
        for key in wanted:
            if stored[key] in found:
                echo_document(found[stored[key]], as_json)
        missing = [key for key in wanted if stored[key] not in found]
        if missing:
            raise NoSuchDocument.of(coll.name, missing)


@cli.command()
@click.argument("name", shell_complete=complete_collections)
@where_option()
@click.option("--after", default=None, metavar="ID",
              help="Only ids after this one in id order: the last id of a page already printed.")
@click.option("--limit", type=int, default=None, help="At most this many documents [default: all].")
@click.option("--text", "with_text", is_flag=True, help="Print each document's text too (as `get` does).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object a line, the fields of `get --json`; text is null without --text.")
@click.pass_context
def documents(ctx, name, where, after, limit, with_text, as_json):
    """List the documents of collection NAME in id order, one line each.

    A line holds the id, the source (or "(text)" for one added as text), its chunks, when it
    was added in local time and its metadata as JSON; with --text its text follows, indented.
    Printed as they are read, a page at a time, so a collection of any size streams; nothing
    matching prints "no documents" (--json: nothing). Page with --limit N, then --after the
    last id printed.

    {STORED_TEXT} {IDS_ARE}"""
    from .collection import Collection

    filters = where_conditions(where, "--where")
    with Collection.open(name, home=ctx.obj["home"]) as coll:
        listed = False
        for doc in coll.documents(where=filters, after=after, limit=limit, text=with_text):
            echo_document(doc, as_json)
            listed = True
    if not listed and not as_json:
        click.echo("no documents")


for _command in (get, documents, similar):  # one wording of the shared paragraphs
    _command.help = _command.help.format(STORED_TEXT=STORED_TEXT, IDS_ARE=IDS_ARE)


def echo_document(doc, as_json: bool) -> None:
    """One stored document: a JSON line, or a header line and its text indented (a
    header is never indented, so where each text ends is plain), safe for a terminal."""
    if as_json:
        click.echo(json.dumps(doc.to_dict(), ensure_ascii=False))
        return
    from datetime import datetime

    added = datetime.fromtimestamp(doc.added_at).astimezone().isoformat(timespec="seconds")
    click.echo(printable(f"{doc.id}  {doc.source or '(text)'}  {doc.chunks} chunk{'' if doc.chunks == 1 else 's'}  "
                         f"added {added}  {json.dumps(doc.metadata, ensure_ascii=False)}"))
    if doc.text:
        click.echo("\n".join(f"    {printable(line)}" if line else "" for line in doc.text.splitlines()))


@cli.command()
@click.argument("name", shell_complete=complete_collections)
@click.option("--text", "texts", multiple=True, help="Text to add (repeatable).")
@click.option("--id", "ids", multiple=True, help="Id for each --text (default: generated).")
@click.option("--meta", multiple=True, help="key=value metadata for the added texts (repeatable).")
@click.option("--jsonl", type=click.Path(dir_okay=False),
              help="Import records, one JSON object a line: text (or content, body), optional id "
                   "(or _id); the other fields become metadata.")
@click.option("--model", default=None, help="Model for a new collection (default: all-MiniLM-L6-v2); "
              "an existing one must name its own.")
@click.pass_context
def add(ctx, name, texts, ids, meta, jsonl, model):
    """Add texts or JSONL records to collection NAME (created if needed)."""
    from .collection import Collection
    from .loaders import read_records

    if not texts and not jsonl:
        raise click.UsageError("give --text or --jsonl")
    if ids and len(ids) != len(texts):
        raise click.UsageError("give one --id per --text")
    metadata = key_value_pairs(meta, "--meta")
    items = [(i, t, dict(metadata)) for i, t in zip(ids or [None] * len(texts), texts)]
    if jsonl:
        for number, rec in enumerate(read_records(jsonl), 1):
            record = record_of(rec, jsonl, number)
            items.append((record.id, record.text, {**metadata, **record.metadata}))
    with Collection.open_or_create(name, model=model, home=ctx.obj["home"]) as coll:
        done = coll.add_texts_report([t for _, t, _ in items], ids=[i for i, _, _ in items],
                                     metadata=[m for _, _, m in items])
        said = "".join(f", {n} {what}" for n, what in (
            (done.replaced, "replacing the one of the same id"),
            (done.unchanged, "unchanged (same text and metadata: nothing embedded)"),
            (done.metadata_updated, "with the same text, only the metadata updated (nothing embedded)")) if n)
        click.echo(f"{coll.name}: added {len(done.ids)} document(s){said}; {coll.count()} in the collection")


@cli.command()
@click.argument("name", shell_complete=complete_collections)
@click.option("--id", "ids", multiple=True, help="Document id to delete (repeatable).")
@click.option("--path", "paths", multiple=True, type=click.Path(), help="Delete documents read from this file or folder.")
@click.option("--missing", is_flag=True,
              help="Delete the documents whose files are gone (moved, renamed or deleted), of "
                   "the whole collection or, with --path, under those paths: after a folder was "
                   "moved and indexed at its new place, its old documents.")
@where_option("Delete the documents (not with --id or --path) that match")
@click.pass_context
def delete(ctx, name, ids, paths, missing, where):
    """Delete documents from collection NAME by id, by file or folder, by metadata filter,
    or those whose files are gone (--missing); prints how many were deleted."""
    from .collection import Collection

    filters = where_conditions(where, "--where")
    if filters and (ids or paths or missing):
        raise click.UsageError("give --where alone, or --id/--path (to delete by id within a filter: --where id=ID)")
    if missing and ids:
        raise click.UsageError("--missing takes no --id (a document read from a file has its path as id: "
                               "--missing --path FILE)")
    if not ids and not paths and not filters and not missing:
        raise click.UsageError("give --id, --path, --where or --missing")
    with Collection.open(name, home=ctx.obj["home"]) as coll:
        if filters:
            removed = coll.delete(where=filters)
        elif missing:
            removed = coll.delete_missing(paths or None)
            click.echo(f"{coll.name}: deleted {removed} document(s) whose files are gone; {coll.count()} left")
            return
        else:
            removed = coll.delete(ids) if ids else 0
            for path in paths:
                removed += coll.delete_path(path)
        if removed == 0:
            what = ("matching " + " ".join(where) if filters else
                    "with id " + ", ".join(ids) if ids else "with a path under " + ", ".join(paths))
            raise NotFound(f"no document {what} in {coll.name}")
        click.echo(f"{coll.name}: deleted {removed} document(s); {coll.count()} left")


@cli.command()
@click.argument("name", shell_complete=complete_collections)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def info(ctx, name, as_json):
    """Show a collection's model, index, counts and size."""
    from .collection import Collection

    with Collection.open(name, home=ctx.obj["home"]) as coll:
        data = coll.info()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    model = data["model"]
    click.echo(f"{data['name']}  ({data['path']})")
    click.echo(f"  model:     {model['name']} ({model['variant']}, {model['dim']}-d, {model['pooling']} pooling)")
    knobs = ", ".join(f"{k}={v}" for k, v in data["index"]["params"].items() if k != "built_for")
    where = "in memory"
    if data["index"]["kind"] == "ondisk":
        where = (f"on disk, memory-mapped, {data['index']['waiting']} added since the build"
                 if data["index"]["built"] else
                 f"on disk, not built: {data['index']['waiting']} vectors scanned exactly; "
                 f"`semsearch build {name}` makes search fast")
    click.echo(f"  index:     {data['index']['spec']} ({where}; asked: {data['index']['requested']})"
               + (f", {knobs}" if knobs else ""))
    click.echo(f"  documents: {data['documents']}   chunks: {data['chunks']}")
    click.echo(f"  chunking:  {data['chunk_tokens']} tokens, overlap {data['overlap']}")
    click.echo(f"  metadata:  {', '.join(printable(k) for k in data['metadata_keys']) or '(none)'}"
               f"   (--where KEY…; also source, id)")
    click.echo(f"  size:      {data['size_bytes'] / 1e6:.1f} MB")
    for n, source in enumerate(data["sources"]):  # what `index --name NAME` alone reads again
        click.echo(f"  {'sources:' if n == 0 else '':10} {source_line(source)}")
    if data.get("notice"):
        click.echo(f"note: {data['notice']}")


@cli.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_(ctx, as_json):
    """List collections under --home."""
    from .collection import home_dir, list_collections

    names = list_collections(ctx.obj["home"])
    if as_json:
        click.echo(json.dumps(names))
    elif not names:
        click.echo(f"no collections in {home_dir(ctx.obj['home'])}")
    else:
        click.echo("\n".join(names))


@cli.command()
@click.argument("name", shell_complete=complete_collections)
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.pass_context
def rm(ctx, name, yes):
    """Delete collection NAME and its files."""
    from .collection import collection_path, delete_collection

    path = collection_path(name, ctx.obj["home"])
    if not yes:  # asked on stderr, so stdout holds only the result
        try:
            sure = click.confirm(f"delete collection {name} ({path})?", err=True)
        except click.exceptions.Abort:  # no answer: stdin ended, or Ctrl-C
            click.echo(err=True)
            sure = False
        if not sure:
            raise click.ClickException(f"{name} not removed: answer y, or give --yes")
    delete_collection(name, home=ctx.obj["home"])
    click.echo(f"removed collection {name} ({path})")


@cli.command()
@click.argument("name", shell_complete=complete_collections)
@click.argument("dest")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def backup(ctx, name, dest, as_json):
    """Copy collection NAME to DEST, a new name under --home or a folder path.

    The copy is the collection as it was at one instant, even while a server, an `index`
    or an `add` is writing to it (copying the folder with cp then can tear the store from
    its write-ahead log). It is a collection itself: search it by its path, or restore it
    with `semsearch backup DEST NAME` once NAME is removed. An on-disk build is not copied;
    `semsearch build DEST` remakes it from the store."""
    from .collection import Collection

    with Collection.open(name, home=ctx.obj["home"]) as coll:
        result = coll.backup(dest, home=ctx.obj["home"])
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"backed up {printable(name)} to {printable(result['path'])}: {result['documents']} documents, "
               f"{result['chunks']} chunks (generation {result['generation']}), "
               f"{result['size_bytes'] / 1e6:.1f} MB in {result['seconds']:.1f}s"
               + ("" if result["index_file"] else "; its index is built from the store when first opened"))


@cli.command()
@click.argument("name", shell_complete=complete_collections)
@click.option("--repair", is_flag=True, help="Fix what can be rebuilt (under the writer lock: safe beside a server).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def check(ctx, name, repair, as_json):
    """Check that collection NAME is whole, after a crash, disk trouble or a folder copied
    by hand; exit 0 when it is (or --repair made it so), 1 when a problem remains.

    \b
    Checked: the store file (SQLite's full integrity_check); the lexical index (FTS5's own
    check of both tables, and that they hold exactly the chunks and documents); every
    document has chunks and every chunk a document; each document's chunk positions are
    0..n-1; every vector is finite, of length 1 and the model's dimension; the index file
    is readable, this collection's, no newer than the store, holds one vector per chunk,
    and 1,000 chunks spread over the store each find themselves by their own vector.

    \b
    --repair rebuilds the lexical index and the index file from the store, and deletes
    documents left without chunks (and chunks without a document): only damage makes
    those. It cannot fix a damaged store file, chunk positions or vectors: restore a
    backup (`semsearch backup`) or re-index. A read-only collection can be checked, not
    repaired."""
    from .collection import Collection
    from .errors import Damaged

    with Collection.open(name, home=ctx.obj["home"]) as coll:
        report = coll.check(repair=repair)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        counts = "" if report["documents"] is None else f": {report['documents']} documents, {report['chunks']} chunks"
        click.echo(f"{printable(report['name'])} ({printable(report['path'])}){counts}")
        for line in report["repaired"]:
            click.echo(f"repaired: {line}")
        wrong = {p["check"] for p in report["problems"]}
        for item in report["checks"]:
            if item["check"] not in wrong:
                click.echo(f"ok: {item['what']}")
        for p in report["problems"]:
            click.echo(f"problem: {printable(p['problem'])}")
        for fix in dict.fromkeys(p["fix"] for p in report["problems"]):
            click.echo(f"to fix: {fix}")
        for note in report["notes"]:
            click.echo(f"note: {printable(note)}")
    if not report["ok"]:
        n = len(report["problems"])
        hint = "" if repair or not all(p["repairable"] for p in report["problems"]) else \
            f"; `semsearch check {name} --repair` fixes {'it' if n == 1 else 'them'}"
        raise Damaged(f"collection {report['name']} has {n} problem{'s' if n > 1 else ''}{hint}")


@cli.command(name="eval")
@click.argument("dataset", type=click.Path(file_okay=False))
@click.option("--mode", type=MODES, default="hybrid", show_default=True,
              help="dense: by meaning (vectors); lexical: BM25 over words; hybrid: both, fused.")
@click.option("--model", default=None, help="Model for a new collection (default: all-MiniLM-L6-v2).")
@click.option("--variant", type=click.Choice(["fp32", "int8"]), default=None,
              help="Model variant for a new collection [default: fp32].")
@click.option("--collection", "collection", default=None,
              help="Reuse (or create) this collection instead of a temporary one.")
@click.option("--index", "index_spec", default=None,
              help="Index for a new collection: auto, flat, hnsw, ivf, ivfpq or a faiss string "
                   "[default: auto].")
@click.option("-k", "k", type=click.IntRange(1), default=100, show_default=True, help="Documents ranked per query.")
@click.option("--split", default="test", show_default=True, help="Which qrels/SPLIT.tsv to score.")
@click.option("--ignore-identical-ids", is_flag=True,
              help="Leave out a retrieved document whose id is the query's, as BEIR's evaluator does by "
                   "default: for data sets where a query is also a document (ArguAna, Quora). Off by default: "
                   "elsewhere ids may merely coincide (Cranfield, MED, NPL: query ids 1..225 are also the ids "
                   "of unrelated documents).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def eval_(ctx, dataset, mode, model, variant, collection, index_spec, k, split, ignore_identical_ids, as_json):
    """Score retrieval on a BEIR-format DATASET folder.

    DATASET holds corpus.jsonl, queries.jsonl and qrels/SPLIT.tsv; prints nDCG@10,
    Recall@100, MRR@10 and MAP@100. Needs the eval extra."""
    from .evaluation import cut, evaluate
    from .metrics import METRICS

    result = evaluate(dataset, mode=mode, model=model, variant=variant, collection=collection,
                      index=index_spec, k=k, split=split, home=ctx.obj["home"],
                      ignore_identical_ids=ignore_identical_ids)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{result['dataset']}: {result['documents']} documents, {result['queries']} queries; "
               f"{result['mode']} with {result['model']} ({result['variant']}, index {result['index']})")
    for name, value in result["metrics"].items():
        click.echo(f"  {name:<11} {value:.4f}")
    left_out = [m for m in METRICS if m not in result["metrics"]]
    if left_out:
        click.echo(f"note: {', '.join(left_out)} left out: -k {max(map(cut, left_out))} or more ranks enough "
                   "documents for them", err=True)


# `semsearch serve`: defined with the server, whose settings its options are; FastAPI and
# uvicorn load only when it runs.
from .server.command import serve  # noqa: E402

cli.add_command(serve)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def doctor(ctx, as_json):
    """What is installed, whether CUDA attaches, and each exported model's validation state.

    Exits 1 when it finds a problem (both ONNX Runtime builds installed, say)."""
    from .models import cached_models
    from .runtime import describe, doctor_lines

    report, found = describe(), cached_models()
    if as_json:
        click.echo(json.dumps({**report, "models": found}, indent=2))
    else:
        click.echo("\n".join(doctor_lines(report, found)))
    ctx.exit(1 if report["problems"] else 0)
