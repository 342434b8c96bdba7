"""The `semsearch serve` command (click only: FastAPI loads when it runs, not when listed)."""
from __future__ import annotations

import click

from .settings import MAX_WAIT_MS, TIMEOUTS, Settings, read_keys


def _default(name):
    return Settings.__dataclass_fields__[name].default


def _collections(ctx, param, incomplete):
    """Shell completion of COLLECTIONS: cli's (imported when asked: cli imports this module)."""
    from ..cli import complete_collections
    return complete_collections(ctx, param, incomplete)


@click.command()
@click.argument("collections", nargs=-1, shell_complete=_collections)
@click.option("--home", default=None,
              help="Folder that holds the collections to serve [env: SEMSEARCH_HOME; default: ./indexes, "
                   "relative to the current folder]; `semsearch --home D serve` works too.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address or name to listen on (0.0.0.0: every interface); anything but loopback needs "
                   "an API key (or --insecure).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port to listen on; 0 picks a free one (printed at start).")
@click.option("--model", default=None,
              help="Model name, HF folder, exported folder or hub id [default: all-MiniLM-L6-v2]; "
                   "collections made with another model are left out (an error if named).")
@click.option("--variant", type=click.Choice(["fp32", "int8", "fp16"]), default="fp32", show_default=True,
              help="Exported variant: fp32 exact, int8 faster on CPUs, fp16 for GPUs.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: CUDA when it attaches, else the CPU.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="ONNX Runtime threads each model run uses [default: on a CPU 1, or cores / --workers "
                   "when --workers is given; on a GPU 1, as only shape arithmetic runs on the CPU].")
@click.option("--api-key-file", type=click.Path(dir_okay=False),
              help="File with API keys, one per line: KEY (may do everything) or KEY read (may search "
                   "and read, not add or delete: 403); '#' comments. SEMSEARCH_API_KEY adds a full one "
                   "[default: no key on loopback].")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback address without an API key.")
@click.option("--batching/--no-batching", default=True, show_default=True,
              help="Merge concurrent embedding requests into shared model runs.")
@click.option("--max-batch-tokens", type=int, default=None,
              help="Padded tokens per model run [default: the device's, 8192 on a CPU].")
@click.option("--max-batch-size", type=int, default=None,
              help="Texts per model run [default: the device's, 32 on a CPU].")
@click.option("--workers", type=int, default=None,
              help="Model runs side by side [default: on a CPU cores / --threads, one per core; on a GPU 1].")
@click.option("--max-wait-ms", type=float, default=_default("max_wait_ms"), show_default=True,
              help=f"How long a queued text waits for others to share its run (0 to {MAX_WAIT_MS:,}).")
@click.option("--max-queue", type=int, default=_default("max_queue"), show_default=True,
              help="Texts queued or running; beyond it requests get 503 + Retry-After.")
@click.option("--max-inputs", type=int, default=_default("max_inputs"), show_default=True,
              help="Texts per embeddings request, documents per add, queries per search.")
@click.option("--max-chars", type=int, default=_default("max_chars"), show_default=True,
              help="Characters per text to embed; longer ones get 413.")
@click.option("--max-k", type=int, default=_default("max_k"), show_default=True, help="Hits a query may ask for (k).")
@click.option("--max-page", type=int, default=_default("max_page"), show_default=True,
              help="Documents one GET .../documents page may ask for (its limit=).")
@click.option("--max-body-bytes", type=int, default=_default("max_body_bytes"), show_default=True,
              help="Bytes per request body; larger ones get 413.")
@click.option("--header-timeout", type=float, default=_default("header_timeout"), show_default=True,
              help=f"Seconds a request's headers may take to arrive, from the connection's open or the "
                   f"request's first byte ({TIMEOUTS[0]:g} to {TIMEOUTS[1]:,}); a slower connection is closed "
                   "(with 408 if part of them came).")
@click.option("--body-timeout", type=float, default=_default("body_timeout"), show_default=True,
              help=f"Seconds a request's body may take to arrive after its headers ({TIMEOUTS[0]:g} to "
                   f"{TIMEOUTS[1]:,}); a slower one gets 408 and its connection is closed.")
@click.option("--max-connections", type=int, default=_default("max_connections"), show_default=True,
              help="Open connections (and requests in flight) at once; beyond it requests get 503.")
@click.option("--max-client-connections", type=int, default=_default("max_client_connections"),
              show_default=True,
              help="Open connections one client address (an IPv6 address's /64) may hold; one beyond it is "
                   "refused at once (503, closed). 0: no cap, for a server behind a proxy (every client has "
                   "the proxy's address: cap clients there).")
@click.option("--access-log", is_flag=True, help="Log every request (method, path, status; never headers).")
@click.option("--watch", is_flag=True,
              help="Keep each collection served at start that was indexed from files in sync with them, "
                   "as `index --watch` does (a line for each pass that changed something); collections "
                   "without sources, or made later, are served, not watched.")
@click.option("--every", type=float, default=None, metavar="SECONDS",
              help="With --watch: seconds between polls, each a stat of every file [default: 2].")
@click.pass_context
def serve(ctx, collections, home, host, port, model, variant, device, threads, api_key_file, insecure,
          batching, max_batch_tokens, max_batch_size, workers, max_wait_ms, max_queue, max_inputs, max_chars,
          max_k, max_page, max_body_bytes, header_timeout, body_timeout, max_connections, max_client_connections,
          access_log, watch, every):
    """Serve embeddings (OpenAI-compatible) and COLLECTIONS (default: all) over HTTP."""
    from .run import serve as run_server

    if every is not None and not watch:
        raise click.UsageError("--every is the time between --watch's polls: give --watch too")

    settings = Settings(batching=batching, max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size,
                        workers=workers, max_wait_ms=max_wait_ms, max_queue=max_queue, max_inputs=max_inputs,
                        max_chars=max_chars, max_k=max_k, max_page=max_page, max_body_bytes=max_body_bytes,
                        header_timeout=header_timeout, body_timeout=body_timeout, max_connections=max_connections,
                        max_client_connections=max_client_connections, api_keys=read_keys(api_key_file))
    home = home or (ctx.obj or {}).get("home")
    run_server(collections, home=home, host=host, port=port, model=model, variant=variant, device=device,
               threads=threads, settings=settings, insecure=insecure, access_log=access_log,
               watch=watch, every=every)
