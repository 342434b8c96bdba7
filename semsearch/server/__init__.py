"""`semsearch serve`: one shared model and the collections behind an HTTP API.

OpenAI-compatible ``/v1/embeddings`` (concurrent requests merged into model runs by
``batcher``), collection search and writes, Prometheus metrics and a search page. Needs the
``serve`` extra (FastAPI, uvicorn, prometheus-client); ``import semsearch`` never loads it.
"""
