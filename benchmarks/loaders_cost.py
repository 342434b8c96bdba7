"""What reading files costs with the loaders added on 2026-11-26, each against the reference
in the same run (medians of --repeats, the calls taking turns, warm cache):

  - front matter: N notes as .md with a YAML block (parsed into metadata) against the same
    bytes as .txt (read as they are); load_file and its segments, per file;
  - headers: the same note with an Org header (.org), an AsciiDoc header (.adoc) and Hugo's
    TOML front matter (.md), each against its own bytes as .txt;
  - a .docx (python-docx, the dev extra, writes it) against the same text as .txt;
  - --exclude: an idle watch poll (loaders.file_stamps) of a notes tree beside a vendored
    node_modules, with `--exclude node_modules` (the walk does not go in) against without.

    nice -n 19 .venv/bin/python benchmarks/loaders_cost.py [--notes 2000] [--vendored 20000]
        [--cases front-matter headers docx exclude]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from semsearch.loaders import Selection, file_stamps, load_file  # noqa: E402

from watch_poll import make_tree, medians_ms  # noqa: E402

NOTE = """---
title: Login bug post-mortem {i}
tags: [auth, incident]
date: 2024-03-05
team: ops
---
# What happened

Sessions expired early after the token refresh change. """ + "More words follow here. " * 40 + "\n"
_TEXT = NOTE.split("---\n", 2)[2]
HEADERS = {  # the note's fields in each format
    ".org": ":PROPERTIES:\n:ID: 6f1c2a9e-{i}\n:END:\n#+TITLE: Login bug post-mortem {i}\n"
            "#+FILETAGS: :auth:incident:\n#+DATE: <2024-03-05 Tue>\n#+TEAM: ops\n\n" + _TEXT.replace("# ", "* "),
    ".adoc": "= Login bug post-mortem {i}\nAnn Lee <ann@example.com>\n:tags: auth, incident\n:date: 2024-03-05\n"
             ":team: ops\n\n" + _TEXT.replace("# ", "== "),
    ".md": '+++\ntitle = "Login bug post-mortem {i}"\ntags = ["auth", "incident"]\ndate = 2024-03-05\n'
           'team = "ops"\n+++\n' + _TEXT,
}


def read_all(paths) -> int:
    return sum(len("".join(doc.segments())) for p in paths for doc in load_file(str(p)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notes", type=int, default=2000)
    ap.add_argument("--paragraphs", type=int, default=6000, help="of the .docx")
    ap.add_argument("--vendored", type=int, default=20000, help="files under node_modules")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--cases", nargs="+", choices=["front-matter", "headers", "docx", "exclude"],
                    default=["front-matter", "headers", "docx", "exclude"])
    args = ap.parse_args()
    print("| what | it, ms | reference, ms | ratio |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases = [("front matter (.md)", ".md", NOTE)] if "front-matter" in args.cases else []
        cases += [(f"a header ({ext}{' +++' * (ext == '.md')})", ext, note) for ext, note in HEADERS.items()
                  if "headers" in args.cases]
        for what, ext, text in cases:
            folder = root / what.replace(" ", "_")
            folder.mkdir()
            notes, txt = [], []
            for i in range(args.notes):
                for e, paths in ((ext, notes), (".txt", txt)):
                    (p := folder / f"n{i}{e}").write_text(text.format(i=i))
                    paths.append(p)
            assert "tags" in next(load_file(str(notes[0]))).metadata
            a, b = medians_ms([lambda: read_all(notes), lambda: read_all(txt)], args.repeats)
            print(f"| {args.notes:,} notes with {what} vs the same bytes as .txt, per file | "
                  f"{a / args.notes:.3f} | {b / args.notes:.3f} | {a / b:.2f} |")
        if "docx" in args.cases:
            import docx
            document = docx.Document()
            for i in range(args.paragraphs):
                document.add_paragraph(f"Paragraph {i}: " + "words about rockets, bread and cats " * 12)
            document.save(root / "big.docx")
            (root / "big.txt").write_text("".join(next(load_file(str(root / "big.docx"))).segments()))
            assert read_all([root / "big.docx"]) == read_all([root / "big.txt"])
            size, text = ((root / name).stat().st_size / 1e6 for name in ("big.docx", "big.txt"))
            a, b = medians_ms([lambda: read_all([root / "big.docx"]), lambda: read_all([root / "big.txt"])],
                              args.repeats)
            print(f"| a {size:.2f} MB .docx ({args.paragraphs:,} paragraphs) vs its text as .txt ({text:.1f} MB) | "
                  f"{a:.1f} | {b:.1f} | {a / b:.2f} |")

        if "exclude" in args.cases:
            tree = root / "tree"
            make_tree(tree / "notes", 2000)
            make_tree(tree / "node_modules", args.vendored)
            excluded = Selection.of(exclude="node_modules")
            assert len(file_stamps([tree], excluded)) == 2000
            a, b = medians_ms([lambda: file_stamps([tree], excluded), lambda: file_stamps([tree])], args.repeats)
            print(f"| idle poll of 2,000 notes beside {args.vendored:,} vendored files: --exclude node_modules "
                  f"vs without | {a:.1f} | {b:.1f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
