"""Write a real corpus that every Python install already has, for the demo.

CPython ships its help topics (``pydoc_data.topics``: the language reference pages
behind ``help("for")``) and its standard library, whose module docstrings we read with
``ast`` (importing every module would have side effects). Output: one .txt file per help
topic and one ``modules.jsonl`` record per module with a docstring of 80+ characters
(id and title: the module's name; metadata kind=module), ready for `semsearch index`:

    python examples/python_docs.py OUT        # default OUT: build/python-docs
    semsearch index OUT --name python-docs    # what `make demo` runs, then searches it
"""
import argparse
import ast
import json
import sysconfig
from pathlib import Path


def help_topics(out: Path) -> int:
    from pydoc_data.topics import topics

    folder = out / "topics"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in topics.items():
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    return len(topics)


def module_docstrings(out: Path) -> int:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    records = []
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib)
        if rel.parts[0] in ("site-packages", "test", "idlelib", "lib2to3") or "tests" in rel.parts:
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        if doc and len(doc) >= 80:
            module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
            records.append({"id": module, "title": module, "text": doc, "kind": "module"})
    with open(out / "modules.jsonl", "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")
    return len(records)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write CPython's help topics and module docstrings "
                                                 "as a corpus for `semsearch index`.")
    parser.add_argument("out", nargs="?", default="build/python-docs", help="output folder (default: %(default)s)")
    target = Path(parser.parse_args().out)
    target.mkdir(parents=True, exist_ok=True)
    print(f"wrote {help_topics(target)} help topics and {module_docstrings(target)} module "
          f"docstrings to {target}")
