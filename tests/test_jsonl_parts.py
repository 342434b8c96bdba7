"""Cutting one JSONL file in line-aligned parts (`index --ray`), without Ray: what each part
reads of the file, and that a part never reads a file other than the one that was cut."""
import json

import pytest

from semsearch.loaders import CHANGED, NO_RECORDS, Skipped, jsonl_parts, load_file


def loaded(path, parts):
    """What load_file gives of each part in turn (of the whole file: parts = [None])."""
    out = []
    for part in parts:
        for d in load_file(str(path), part):
            out.append((d.source, d.reason, d.transient) if isinstance(d, Skipped) else
                       (d.key, d.where, d.content_hash, "".join(d.segments()), d.replaced_chars))
    return out


def records(n, width=0, first=0):
    return [json.dumps({"id": f"r{i}", "text": f"record {i} " + "x" * width}) for i in range(first, first + n)]


def fragments_at(parts):
    """A new file in which each part's start, but the first, falls inside a line whose tail
    from there is a valid record (the line as a whole is not JSON)."""
    out = b""
    for p in parts[1:]:
        out += b"#" * (p.start - len(out)) + b'{"text": "a fragment of a line"}\n'
    return out


EDGES = {  # files whose parts (or not: UTF-16) must load as the whole file does
    "crlf": "\r\n".join(records(40)).encode() + b"\r\n",
    "no final newline": "\n".join(records(40)).encode(),
    "blank lines": "\n\n \n".join(records(40)).encode() + b"\n\n\n",
    "bom": "\ufeff".encode() + "\n".join(records(40)).encode() + b"\n",
    "a line longer than a part": "\n".join(records(10) + records(1, width=3000, first=10) + records(10, first=11)).encode(),
    "utf-16": ("\n".join(records(40)) + "\n").encode("utf-16"),
}


@pytest.mark.parametrize("name, data", EDGES.items())
def test_the_parts_of_a_jsonl_file_load_as_the_whole_file_does(tmp_path, name, data):
    """(less "no records" of a part of blank lines: only the whole file says it, see jsonl_parts)"""
    path = tmp_path / "f.jsonl"
    path.write_bytes(data)
    for part_bytes in (1, 50, 333, 1000):
        parts = jsonl_parts(str(path), part_bytes)
        assert (parts == []) == (name == "utf-16") and all(p.end > p.start for p in parts)
        if parts:
            assert parts[0].start == 0 and parts[-1].end == len(data)
            in_parts = [d for d in loaded(path, parts) if d[1:] != (NO_RECORDS, False)]
            assert in_parts == loaded(path, [None]), (name, part_bytes)


@pytest.mark.parametrize("change", ["rewritten", "appended", "removed"])
def test_a_part_refuses_to_read_a_file_changed_after_the_cut(tmp_path, change):
    """A file changed between the cut and the read gave parts that start mid-line: their
    first line read as a record of its own (here a fragment that is valid JSON: indexed),
    or as 'invalid JSON' at a wrong line. Now each part says the file changed (or is gone),
    and reads nothing."""
    path = tmp_path / "dump.jsonl"
    path.write_text("\n".join(records(60)) + "\n")
    parts = jsonl_parts(str(path), 300)
    assert len(parts) > 3
    if change == "rewritten":
        path.write_bytes(fragments_at(parts))
        reason = CHANGED
    elif change == "appended":
        with open(path, "a") as f:
            f.write(records(61)[-1] + "\n")
        reason = CHANGED
    else:
        path.unlink()
        reason = "No such file or directory"
    for part in parts:
        assert loaded(path, [part]) == [(str(path), reason, True)]


def test_a_part_stops_reading_where_its_file_changes_under_it(tmp_path):
    """A file rewritten while a part is being read: what the part gave before are whole
    records of the file as cut; then it says the file changed, and gives nothing more."""
    path = tmp_path / "dump.jsonl"
    path.write_text("\n".join(records(3000)) + "\n")
    whole = {d[0]: d for d in loaded(path, [None])}
    part = jsonl_parts(str(path), 32 << 10)[0]  # 4 times what a part's reader reads at a time
    reading = load_file(str(path), part)
    first = next(reading)
    path.write_bytes(b"\n" * 7 + path.read_bytes())  # every line moves by 7 bytes
    rest = list(reading)
    assert rest[-1] == Skipped(str(path), CHANGED, transient=True)
    for d in [first] + rest[:-1]:
        assert (d.key, d.where, d.content_hash, "".join(d.segments())) == whole[d.key][:4]
    assert len(rest) < 3000
