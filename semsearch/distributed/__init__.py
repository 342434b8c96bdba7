"""Scale-out: Ray Data ingest and on-disk IVF indexes. Imports Ray only when used."""
