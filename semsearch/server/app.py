"""The FastAPI app: routes over one shared Embedder, its batcher and the served collections
(served.py: which they are, opened and reopened as the CLI changes them).

Blocking library calls run in threads (searches, info and document reads in the threadpool, writes on a
few threads of their own); embedding, search queries' included, goes through the batcher,
so the event loop never waits on ONNX Runtime or SQLite. Everything else is ``async def``: FastAPI runs a plain ``def`` route or
dependency in its threadpool, a thread hop per request.
"""
from __future__ import annotations

import asyncio
import base64
import functools
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import anyio
import fastapi_swagger
import orjson
from fastapi import APIRouter, FastAPI, Query, Request, Security
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from .. import __version__, validation
from ..errors import CollectionError, InvalidInput, NoSuchDocument, NotFound, TooLarge
from .batcher import MicroBatcher, Unbatched
from .errors import HANDLERS, ClientGone, Unexpected
from .metrics import CONTENT_TYPE_LATEST, Metrics, RequestMetrics
from .schemas import AddRequest, DeleteRequest, DocumentsQuery, EmbeddingsRequest, SearchRequest, SimilarRequest
from .security import BEARER, BodyLimit, ReadRoute, WriteRoute
from .served import ModelMismatch, Served
from .watching import Watches
from .settings import Settings

STATIC = Path(__file__).parent / "static"  # package data (pyproject.toml)
SWAGGER_UI = Path(fastapi_swagger.__file__).parent / "resources"  # Swagger UI's own files
log = logging.getLogger("semsearch.server")
WRITE_THREADS = 4  # writes to one collection take turns; a few let other collections' go on
DEFAULT_PAGE = 100  # documents a GET .../documents page holds when it gives no limit (OpenAI's lists: 20)


class FastJSON(JSONResponse):
    """JSON by orjson, skipping FastAPI's per-value encoder walk: a float32 vector is written
    as the shortest numbers that read back as the same float32s, not as float64's 17 digits.
    A 2,048-text float answer took json.dumps 0.90 s (17.4 MB) on the event loop, every
    other request waiting; orjson takes 0.04 s (9.7 MB)."""

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def create_app(embedder, served: Served, settings: Settings = Settings(), watch: float | None = None) -> FastAPI:
    """An app serving ``embedder`` and the ``served`` collections (which share it).
    The app starts the batcher and, on shutdown, drains it and closes the collections.
    ``watch``: seconds between polls of the served collections' sources (watching.py)."""
    metrics = Metrics()
    batcher = (MicroBatcher if settings.batching else Unbatched)(embedder, settings, metrics)
    model_id = embedder.manifest["name"]
    watches = None if watch is None else Watches(served, watch, metrics)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        if watches is not None:
            watches.start()
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            if watches is not None:  # before the collections close
                await run_in_threadpool(watches.close)
            await run_in_threadpool(batcher.close)
            await run_in_threadpool(served.close)

    app = FastAPI(title="semsearch", version=__version__, lifespan=lifespan,
                  exception_handlers=HANDLERS, docs_url=None)
    app.state.settings, app.state.metrics, app.state.ready = settings, metrics, False
    # every route on these needs a key; which of the two a route is on is the one place that says
    # whether it writes (a read-only key gets 403 there); a route added on neither is open to all
    read_api = APIRouter(route_class=ReadRoute, dependencies=[Security(BEARER)])
    write_api = APIRouter(route_class=WriteRoute, dependencies=[Security(BEARER)],
                          responses={403: {"description": "The API key is read-only"}})

    async def embed(request: Request, texts: list[str], kind: str | None):
        """The batcher's vectors for ``texts``, unless the client hangs up first: then its
        texts are cancelled, and the batcher skips the runs that nobody waits for."""
        job = asyncio.ensure_future(batcher.embed(texts, kind))
        gone = asyncio.ensure_future(hung_up(request.receive))
        try:
            done, _ = await asyncio.wait((job, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when this request is cancelled (a shutdown past its drain time)
            gone.cancel()
            job.cancel()
        if job not in done:
            raise ClientGone("the client hung up before its vectors were ready")
        return job.result()

    # -- open: liveness and the page (static files, no data) ------------------------------------
    @app.api_route("/healthz", methods=["GET", "HEAD"], include_in_schema=False)  # probes may send HEAD
    async def healthz():
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.mount("/docs-assets", StaticFiles(directory=str(SWAGGER_UI)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        """FastAPI's Swagger UI page with its files served from here: it works offline."""
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="semsearch API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")

    # -- protected --------------------------------------------------------------------------
    @read_api.get("/readyz")
    async def readyz():
        ready = app.state.ready and batcher.alive
        body = {"status": "ready" if ready else "not ready", "model": model_id,
                "collections": served.serving()}
        return JSONResponse(body, status_code=200 if ready else 503)

    @read_api.get("/metrics")  # counts and latencies, no document or key: a scraper may hold a read-only key
    def metrics_text():
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    def served_model(name: str) -> dict:
        """OpenAI's model object, for the model's full or short name."""
        if name not in (model_id, model_id.rsplit("/", 1)[-1]):
            raise NotFound(f"model {name!r} is not served here; this server serves {model_id}")
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "semsearch", "dimensions": embedder.dim}

    @read_api.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [served_model(model_id)]}

    @read_api.get("/v1/models/{name:path}")  # OpenAI's client: models.retrieve(name)
    async def get_model(name: str):
        return served_model(name)

    @read_api.post("/v1/embeddings")  # computes vectors, stores nothing (model time, as a search's query takes)
    async def embeddings(body: EmbeddingsRequest, request: Request):
        served_model(body.model)
        if body.dimensions is not None and body.dimensions != embedder.dim:
            raise InvalidInput(f"dimensions must be {embedder.dim} (the model's own) for {model_id}")
        texts = [body.input] if isinstance(body.input, str) else body.input
        check_texts(texts, settings, "input")
        vectors, used = await embed(request, texts, body.input_type)
        if body.encoding_format == "base64":
            rows = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vectors]
        else:
            rows = list(vectors)  # float32 rows, written by FastJSON as they are
        return FastJSON({"object": "list", "model": model_id,
                             "data": [{"object": "embedding", "index": i, "embedding": row}
                                      for i, row in enumerate(rows)],
                             "usage": {"prompt_tokens": used, "total_tokens": used}})

    @read_api.get("/v1/collections")
    async def list_collections():
        """Every served collection that can be read: one removed (`semsearch rm`), broken
        or of another model is left out (its own route says why), not a 500 for all of them."""
        infos = []
        for name in await run_in_threadpool(served.names):
            try:
                async with served.use(name) as c:
                    infos.append(await info_of(c))
            except ModelMismatch:
                pass
            except CollectionError as exc:
                log.warning("collection %s left out of the list: %s", name, exc.one_line())
        return {"object": "list", "data": infos}

    async def info_of(coll) -> dict:
        info = await run_in_threadpool(coll.info)
        watching = None if watches is None else watches.about(coll.name)
        return info if watching is None else {**info, "watching": watching}

    @read_api.get("/v1/collections/{name}")
    async def collection_info(name: str):
        async with served.use(name) as target:
            return await info_of(target)

    @read_api.post("/v1/collections/{name}/search")
    async def search(name: str, body: SearchRequest, request: Request):
        async with served.use(name) as target:
            if (body.query is None) == (body.queries is None):
                raise InvalidInput("give either query (one string) or queries (a list of strings)")
            k = count(body.k, validation.DEFAULT_K, "k", settings.max_k)
            asked = body.query if body.query is not None else body.queries
            queries, single = validation.queries(asked)
            check_texts(queries, settings, "query" if single else "queries")
            validation.choice(body.mode, "mode", validation.MODES)  # before embedding for nothing
            where = validation.where_filter(body.where_filter())  # refused before embedding for nothing
            vectors = None
            if body.mode != "lexical":  # queries share model runs with embedding requests
                vectors, _ = await embed(request, queries, "query")
            found = await run_in_threadpool(target.search, asked, k=k, mode=body.mode, where=where,
                                            docs=body.docs, query_vectors=vectors)
            if single:
                return FastJSON({"object": "list", "data": [h.to_dict() for h in found]})
            return FastJSON({"object": "list", "results": [{"data": [h.to_dict() for h in hits]} for hits in found]})

    @read_api.post("/v1/collections/{name}/similar")
    async def similar(name: str, body: SimilarRequest):
        """The documents (``docs``: false, the chunks) most like the stored document ``id``,
        it left out, as a search answers them: nothing to embed, its vectors are stored."""
        async with served.use(name) as target:
            k = count(body.k, validation.DEFAULT_K, "k", settings.max_k)
            found = await run_in_threadpool(target.similar, body.id, k=k, where=body.where_filter(), docs=body.docs)
        return FastJSON({"object": "list", "data": [h.to_dict() for h in found]})

    writing = anyio.CapacityLimiter(WRITE_THREADS)

    async def write(method, *args, **kwargs):
        """A write on threads of its own: writes wait for each other (a collection's writer
        lock, up to 10 s a write when another process holds it), and from the shared
        threadpool they held every thread, stalling searches, info and /metrics."""
        return await anyio.to_thread.run_sync(functools.partial(method, *args, **kwargs), limiter=writing)

    @write_api.post("/v1/collections/{name}/documents")
    async def add_documents(name: str, body: AddRequest):
        async with served.use(name) as target:
            validation.positive_int(len(body.documents), "the number of documents", settings.max_inputs)
            done = await write(target.add_texts_report, [d.text for d in body.documents],
                               ids=[d.id for d in body.documents], metadata=[d.metadata or {} for d in body.documents])
        # counts of the ids: new, replacing a document's text, of a held text with new metadata
        # (not embedded), unchanged (nothing written)
        return {"object": "list", "ids": done.ids, "added": done.added, "replaced": done.replaced,
                "metadata_updated": done.metadata_updated, "unchanged": done.unchanged}

    @write_api.post("/v1/collections/{name}/documents/delete")
    async def delete_documents(name: str, body: DeleteRequest):
        """Delete by ``ids`` (none: 0, as the library's) or by ``where`` (Collection.delete):
        how many existed, 0 too."""
        async with served.use(name) as target:
            if body.ids:
                validation.positive_int(len(body.ids), "the number of ids", settings.max_inputs)
            deleted = await write(target.delete, body.ids, where=body.where_filter())
        return {"deleted": deleted}

    @read_api.get("/v1/collections/{name}/documents")
    async def list_documents(name: str, query: Annotated[DocumentsQuery, Query()]):
        """A page of the stored documents, in id order, in OpenAI's list shape: the next
        page is `after=` this one's `last_id`, while `has_more`."""
        async with served.use(name) as target:
            limit = count(query.limit, DEFAULT_PAGE, "limit", settings.max_page)
            where = validation.where_conditions(query.where, "where")

            def page():  # one more than asked for says whether there are more
                return list(target.documents(where=where, after=query.after, limit=limit + 1, text=query.text))
            docs = await run_in_threadpool(page)
        data = [document_object(d) for d in docs[:limit]]
        return FastJSON({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": len(docs) > limit})

    @read_api.get("/v1/collections/{name}/documents/{doc_id:path}")  # ids may hold '/' (sent as %2F or not)
    async def get_document(name: str, doc_id: str):
        """One stored document: its text (rebuilt from its chunks, so a hit's start and end
        index into it), source, metadata, number of chunks and when it was added."""
        async with served.use(name) as target:
            return FastJSON(document_object(await run_in_threadpool(target.get, doc_id)))

    @write_api.delete("/v1/collections/{name}/documents/{doc_id:path}")  # ids may hold '/' (sent as %2F or not)
    async def delete_document(name: str, doc_id: str):
        async with served.use(name) as target:
            if not await write(target.delete, [doc_id]):
                raise NoSuchDocument.of(target.name, [doc_id])  # as GET of it words it
        return {"id": doc_id, "deleted": True}

    app.include_router(read_api)
    app.include_router(write_api)
    app.add_middleware(Unexpected)  # innermost of these: the metrics see its 500s
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, timeout=settings.body_timeout)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app


async def hung_up(receive) -> None:
    """Returns when the client disconnects: once a request's body is read, the next message
    the server gets for it is that (or the end of its response)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def document_object(doc) -> dict:
    return {"object": "document", **doc.to_dict()}


def count(value: int | None, default: int, name: str, limit: int) -> int:
    """A count a request may leave out (k, limit): then ``default``, or the server's limit if
    lower, for a request must not be refused for a value it did not give; given, 1 to the
    limit (past it a 413)."""
    return min(default, limit) if value is None else validation.positive_int(value, name, limit)


def check_texts(texts: list[str], settings: Settings, name: str) -> None:
    """The server's own limits on what one request may ask the model to embed."""
    if not texts:
        raise InvalidInput(f"{name} is empty")
    validation.positive_int(len(texts), f"the number of {name} texts", settings.max_inputs)
    for i, text in enumerate(texts):
        if not text:
            raise InvalidInput(f"{name}[{i}] is an empty string")
        if len(text) > settings.max_chars:
            raise TooLarge(f"{name}[{i}] has {len(text):,} characters; the limit is {settings.max_chars:,}")
