"""Jupyter notebooks (semsearch/notebook.py), read by the loader and indexed end to end
through the CLI with the real model.

nbformat is not installed in the venv, so the notebooks are written here as Jupyter
writes them (nbformat's JSONWriter: indent 1, keys sorted, not ASCII-escaped, multi-line
strings as lists of lines, a newline at the end)."""
import base64
import json
import os

from semsearch import notebook, validation
from semsearch.loaders import Document, Skipped, list_files, load_file

from test_cli import ok, run

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40).decode()


def lines(text: str) -> list[str]:
    """A multi-line string as nbformat writes it: its lines, each with its newline."""
    return text.splitlines(True)


def markdown(source: str) -> dict:
    return {"cell_type": "markdown", "id": f"m{abs(hash(source)) % 10**8}", "metadata": {}, "source": lines(source)}


def code(source: str, *outputs, count=1) -> dict:
    return {"cell_type": "code", "execution_count": count, "id": f"c{abs(hash(source)) % 10**8}",
            "metadata": {}, "outputs": list(outputs), "source": lines(source)}


def stream(text: str) -> dict:
    return {"name": "stdout", "output_type": "stream", "text": lines(text)}


def result(plain: str, count=1, **data) -> dict:
    return {"data": {"text/plain": lines(plain), **data}, "execution_count": count, "metadata": {},
            "output_type": "execute_result"}


def picture() -> dict:
    return {"data": {"image/png": PNG, "text/html": ["<b>figure caption html</b>"],
                     "text/plain": ["<Figure size 640x480 with 1 Axes>"]},
            "metadata": {}, "output_type": "display_data"}


def error() -> dict:
    return {"ename": "ZeroDivisionError", "evalue": "division by zero", "output_type": "error",
            "traceback": ["\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"]}


def write(path, cells, language="python", kernel="python3", nbformat=4) -> str:
    nb = {"cells": cells, "metadata": {
        "kernelspec": {"display_name": kernel, "language": language, "name": kernel},
        "language_info": {"name": language, "version": "3.11.4"}}, "nbformat": nbformat, "nbformat_minor": 5}
    path.write_text(json.dumps(nb, sort_keys=True, indent=1, separators=(",", ": "), ensure_ascii=False) + "\n",
                    encoding="utf-8")
    return str(path)


ANALYSIS = [
    markdown("Some intro before the heading.\n\n# Sales *analysis* 2024 #\n\nQuarterly revenue, by region."),
    code("import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(len(df))\n",
         stream("1234 rows printed to stdout\n"), count=1),
    markdown(""),  # an empty cell: not in the text, still a cell
    code("df.groupby('region').revenue.sum()", result("region\nnorth    10\nsouth    20"), count=2),
    code("df.plot()", picture(), error(), count=3),
    {"cell_type": "raw", "id": "r1", "metadata": {}, "source": ["\\begin{equation} e = mc^2 \\end{equation}"]},
    markdown("## Conclusions\n\nThe north sold less than the south."),
]

ANALYSIS_TEXT = ("Sales *analysis* 2024\n"
                 "Some intro before the heading.\n\n# Sales *analysis* 2024 #\n\nQuarterly revenue, by region.\n\n"
                 "```python\nimport pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(len(df))\n```\n\n"
                 "```python\ndf.groupby('region').revenue.sum()\n```\n\n"
                 "```python\ndf.plot()\n```\n\n"
                 "\\begin{equation} e = mc^2 \\end{equation}\n\n"
                 "## Conclusions\n\nThe north sold less than the south.")


def one(path) -> Document:
    (doc,) = load_file(str(path))
    assert isinstance(doc, Document), doc
    return doc


def skip(path) -> Skipped:
    (doc,) = load_file(str(path))
    assert isinstance(doc, Skipped), doc
    return doc


def text(doc) -> str:
    return "".join(doc.segments())


def test_cells_in_order_code_fenced_outputs_left_out_and_the_metadata(tmp_path):
    path = write(tmp_path / "sales.ipynb", ANALYSIS)
    assert '"image/png": "iVBORw0K' in open(path).read()  # written as Jupyter writes it
    doc = one(path)
    assert (doc.key, doc.source) == (path, path)
    assert text(doc) == ANALYSIS_TEXT
    assert doc.metadata == {"path": path, "type": "ipynb", "language": "python", "cells": 7,
                            "title": "Sales *analysis* 2024"}
    validation.json_value(doc.metadata, "metadata")
    assert [f for f in list_files([tmp_path])] == [path]  # a walk takes notebooks


def test_running_the_notebook_again_changes_no_hash_editing_a_cell_does(tmp_path):
    """Outputs and execution counts are what a run rewrites: not read, so not in the hash."""
    path = tmp_path / "sales.ipynb"
    before = one(write(path, ANALYSIS)).content_hash
    rerun = [dict(c, execution_count=c["execution_count"] + 10, outputs=[stream("other output\n")])
             if c["cell_type"] == "code" else c for c in ANALYSIS]
    assert one(write(path, rerun)).content_hash == before
    edited = ANALYSIS[:-1] + [markdown("## Conclusions\n\nThe south sold less than the north.")]
    assert one(write(path, edited)).content_hash != before
    assert one(write(path, ANALYSIS, language="julia", kernel="julia-1.10")).content_hash != before


def test_the_kernels_language_and_a_notebook_of_nbformat_3(tmp_path):
    r = one(write(tmp_path / "r.ipynb", [code("summary(cars)")], language="R", kernel="ir"))
    assert text(r) == "```r\nsummary(cars)\n```" and r.metadata["language"] == "r" and "title" not in r.metadata

    nb3 = {"metadata": {"name": "old"}, "nbformat": 3, "nbformat_minor": 0, "worksheets": [{"cells": [
        {"cell_type": "heading", "level": 1, "metadata": {}, "source": ["Old notebook"]},
        {"cell_type": "markdown", "metadata": {}, "source": ["Written by IPython 2."]},
        {"cell_type": "code", "collapsed": False, "input": ["x = 1\n", "print(x)"], "language": "python",
         "metadata": {}, "outputs": [{"output_type": "stream", "stream": "stdout", "text": ["1\n"]}],
         "prompt_number": 1}], "metadata": {}}]}
    path = tmp_path / "old.ipynb"
    path.write_text(json.dumps(nb3, indent=1))
    doc = one(path)
    assert text(doc) == "Old notebook\n# Old notebook\n\nWritten by IPython 2.\n\n```python\nx = 1\nprint(x)\n```"
    assert doc.metadata == {"path": str(path), "type": "ipynb", "language": "python", "cells": 3,
                            "title": "Old notebook"}


def test_a_broken_notebook_or_json_that_is_none_is_one_skip(tmp_path):
    whole = open(write(tmp_path / "x.ipynb", ANALYSIS), "rb").read()
    (tmp_path / "half.ipynb").write_bytes(whole[:len(whole) // 2])  # caught half-saved
    s = skip(tmp_path / "half.ipynb")
    assert s.reason.startswith("invalid JSON: ") and "\n" not in s.reason and s.transient

    (tmp_path / "list.ipynb").write_text('[1, 2, 3]')
    (tmp_path / "other.ipynb").write_text('{"name": "a package.json?"}')
    (tmp_path / "blank.ipynb").write_text("  \n")
    (tmp_path / "deep.ipynb").write_text("[" * 100_000 + "]" * 100_000)
    assert skip(tmp_path / "list.ipynb").reason == notebook.NOT_NOTEBOOK
    assert skip(tmp_path / "other.ipynb").reason == notebook.NOT_NOTEBOOK
    assert skip(tmp_path / "blank.ipynb").reason == "empty file"
    assert skip(tmp_path / "deep.ipynb").reason == "invalid JSON: nested too deeply"
    assert skip(write(tmp_path / "empty.ipynb", [markdown(""), code("", stream("only output\n"))])).reason == \
        notebook.EMPTY


def test_a_notebook_of_outputs_reads_its_cells_and_one_past_the_cap_is_skipped(tmp_path, monkeypatch):
    """20 MB of plots: only the cells are read. Past MAX_NOTEBOOK the file is not parsed."""
    plots = [picture() for _ in range(2000)]
    path = write(tmp_path / "plots.ipynb", [markdown("# Plots"), code("for i in range(2000): show(i)", *plots)])
    size = os.path.getsize(path)
    assert size > 20e6
    assert text(one(path)) == "Plots\n# Plots\n\n```python\nfor i in range(2000): show(i)\n```"
    monkeypatch.setattr(notebook, "MAX_NOTEBOOK", size - 1)
    assert skip(path).reason == notebook.TOO_BIG


# ---------------------------------------------------------------- end to end, the real model


def hits(*args):
    return json.loads(ok(run("search", *args, "--json")).stdout)


def test_index_and_search_notebooks_by_language_then_run_one_again(home, tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    sales = write(folder / "sales.ipynb", ANALYSIS)
    rockets = write(folder / "orbits.ipynb", [markdown("# Orbits\n\nA rocket carries a satellite into orbit."),
                                              code("using Plots\nplot(orbit)")], language="julia", kernel="julia")
    (folder / "bread.md").write_text("Knead the dough and bake the loaf in a hot oven.\n")
    said = ok(run("index", folder, "--name", "nb")).stdout
    assert "nb: added 3, updated 0, unchanged 0, removed 0, skipped 0;" in said, said

    top = hits("nb", "revenue of each region", "-k", 1)[0]
    assert (top["id"], top["metadata"]["language"], top["metadata"]["title"]) == \
        (sales, "python", "Sales *analysis* 2024")
    assert hits("nb", "spacecraft launch", "-k", 1)[0]["id"] == rockets
    assert {h["id"] for h in hits("nb", "anything", "--where", "language=python", "--docs")} == {sales}
    assert {h["id"] for h in hits("nb", "anything", "--where", "type=ipynb", "--docs")} == {sales, rockets}

    rerun = [dict(c, outputs=[stream("a new run's output\n")]) if c["cell_type"] == "code" else c for c in ANALYSIS]
    write(folder / "sales.ipynb", rerun)
    said = ok(run("index", folder, "--name", "nb")).stdout
    assert "nb: added 0, updated 0, unchanged 3, removed 0, skipped 0;" in said, said
