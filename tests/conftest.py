"""Shared fixtures: the default model is exported once per test session, for real.

The export goes into a temporary cache (SEMSEARCH_CACHE, inherited by subprocesses), so
the tests never depend on what a developer has cached.
"""
import os

import pytest


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory):
    """The default model exported (fp32 + int8) and validated against PyTorch."""
    cache = tmp_path_factory.mktemp("cache")
    os.environ["SEMSEARCH_CACHE"] = str(cache)
    from semsearch.export import export

    return export(None, quantize="int8", log=lambda msg: None)


@pytest.fixture(scope="session")
def embedder(model_folder):
    from semsearch.embedder import Embedder

    return Embedder.load(None, variant="fp32", device="cpu")


@pytest.fixture(scope="session")
def embedder_int8(model_folder):
    from semsearch.embedder import Embedder

    return Embedder.load(None, variant="int8", device="cpu")


@pytest.fixture(scope="session")
def ray_local(model_folder):
    """One local Ray for the whole session (2 CPUs, loopback, no dashboard); started after
    the model export so the workers inherit SEMSEARCH_CACHE."""
    import ray
    from semsearch.distributed.cluster import _runtime_env
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False, runtime_env=_runtime_env() or None)
    yield ray
    ray.shutdown()


@pytest.fixture
def home(tmp_path, monkeypatch, model_folder):
    """A fresh collections home for one test."""
    folder = tmp_path / "indexes"
    monkeypatch.setenv("SEMSEARCH_HOME", str(folder))
    return folder


@pytest.fixture(scope="module")
def collection_of(tmp_path_factory, model_folder):
    """A test module's small collection: one document per id -> text of ``docs``."""
    from semsearch.collection import Collection

    made = []

    def make(docs: dict, **settings):
        coll = Collection.create(tmp_path_factory.mktemp("coll") / "c", **settings)
        coll.add_texts(list(docs.values()), ids=list(docs))
        made.append(coll)
        return coll

    yield make
    for coll in made:
        coll.close()
