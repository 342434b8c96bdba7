"""E-mail (semsearch/mail.py): .eml files and .mbox mailboxes written by the standard
library's own writers (email.message.EmailMessage, mailbox.mbox), read by the loader, and
indexed end to end through the CLI with the real model."""
import email.message
import json
import mailbox
import os
import random

from semsearch import mail, validation
from semsearch.loaders import Document, Skipped, iter_documents, load_file

from test_cli import ok, run

ANN = "Ann Lee <ann@example.org>"


def message(subject="Garden", body="Water the tomatoes twice a week.", mid=None, sender=ANN,
            date="Fri, 01 Mar 2024 09:30:00 +0100", cte=None, **headers) -> email.message.EmailMessage:
    m = email.message.EmailMessage()
    m["From"] = sender
    m["To"] = "bob@example.com, Carol Díaz <carol@example.net>"
    m["Subject"] = subject
    m["Date"] = date
    if mid:
        m["Message-ID"] = mid
    for name, value in headers.items():
        m[name.replace("_", "-")] = value
    if body is not None:
        m.set_content(body, cte=cte)
    return m


def eml(path, m) -> str:
    path.write_bytes(bytes(m))
    return str(path)


def mbox(path, *messages) -> str:
    box = mailbox.mbox(path)
    for m in messages:
        box.add(m)
    box.flush()
    box.close()
    return str(path)


def from_lines(path) -> list[int]:
    """The line numbers of an mbox's "From " lines, where its messages start."""
    with open(path, "rb") as f:
        return [n for n, line in enumerate(f, 1) if line.startswith(b"From ")]


def load(path) -> list:
    return list(load_file(str(path)))


def one(path) -> Document:
    (doc,) = load(path)
    assert isinstance(doc, Document), doc
    return doc


def text(doc: Document) -> str:
    return "".join(doc.segments())


def test_a_plain_message_its_metadata_and_the_subject_first(tmp_path):
    path = eml(tmp_path / "a.eml", message(mid="<a1@example.org>", cc="Dee <dee@example.com>",
                                           in_reply_to="<a0@example.org>"))
    doc = one(path)
    assert (doc.key, doc.source, doc.where) == (path, path, None)
    assert text(doc) == "Garden\nWater the tomatoes twice a week."
    assert doc.metadata == {
        "path": path, "type": "eml", "from": ["ann@example.org"], "to": ["bob@example.com", "carol@example.net"],
        "cc": ["dee@example.com"], "subject": "Garden", "title": "Garden",
        "date": "2024-03-01T08:30:00+00:00",  # 09:30 at +01:00, in UTC
        "message_id": "a1@example.org", "in_reply_to": "a0@example.org"}
    validation.json_value(doc.metadata, "metadata")


def test_alternative_takes_the_plain_part_and_an_html_only_message_reads_through_the_html_parser(tmp_path):
    m = message(body="Plain words about tomatoes.")
    m.add_alternative("<p>HTML words about <b>peppers</b></p>", subtype="html")
    assert text(one(eml(tmp_path / "alt.eml", m))) == "Garden\nPlain words about tomatoes."

    m = message(subject="Menu", body=None)
    m.set_content("<html><head><title>ignored</title><style>p {color: red}</style></head><body>"
                  "<p>Soup of the <b>day</b></p><ul><li>bread</li><li>cheese</li></ul>"
                  "<script>track()</script></body></html>", subtype="html")
    assert text(one(eml(tmp_path / "html.eml", m))) == "Menu\nSoup of the day\n\n\nbread\n\ncheese"


def test_attachments_are_named_not_read(tmp_path):
    m = message(body="The plan is attached.")
    m.add_attachment(b"%PDF-1.4 secret plan", maintype="application", subtype="pdf", filename="plan.pdf")
    m.add_attachment("zebra quokka narwhal", filename="notes.txt")  # a text attachment: not read either
    doc = one(eml(tmp_path / "att.eml", m))
    assert text(doc) == "Garden\nThe plan is attached."
    assert doc.metadata["attachments"] == ["plan.pdf", "notes.txt"]


def test_charsets_and_transfer_encodings_are_decoded(tmp_path):
    m = message(subject="Crème brûlée", body=None, sender="Zoë Faure <zoe@example.fr>")
    m.set_content("Café crème à la française, s'il vous plaît.", charset="iso-8859-1", cte="quoted-printable")
    raw = bytes(m)
    assert b"Caf=E9 cr=E8me" in raw and b"=?utf-8?b?Q3LDqG1lIGJyw7tsw6ll?=" in raw  # base64 encoded words
    doc = one(eml(tmp_path / "latin.eml", m))
    assert text(doc) == "Crème brûlée\nCafé crème à la française, s'il vous plaît."
    assert doc.metadata["from"] == ["zoe@example.fr"] and doc.replaced_chars == 0

    m = message(body="Grüße aus Köln", cte="base64")
    assert b"R3LDvMOfZSBhdXMgS8O2bG4K" in bytes(m)
    assert text(one(eml(tmp_path / "b64.eml", m))) == "Garden\nGrüße aus Köln"

    # a charset no codec has: the bytes read by the file rule (UTF-8, else Windows-1252)
    m = message(body=None)
    m.set_content("Déjà vu: the same café again this morning.".encode("cp1252"), maintype="text", subtype="plain", cte="8bit")
    m.set_param("charset", "x-no-such-charset")
    assert text(one(eml(tmp_path / "unknown.eml", m))) == "Garden\nDéjà vu: the same café again this morning."

    # raw 8-bit Latin-1 in the headers (no encoded words), as old clients wrote them
    path = tmp_path / "raw.eml"
    path.write_bytes(b"From: \xc9lise <elise@example.fr>\nSubject: r\xe9union lundi\n\n\xe0 bient\xf4t\n")
    doc = one(path)
    assert text(doc) == "réunion lundi\nà bientôt" and doc.metadata["subject"] == "réunion lundi"


def test_a_forwarded_message_is_read_as_text_too(tmp_path):
    inner = message(subject="Quarterly numbers", body="Revenue rose ten percent.", sender="Dana <dana@example.com>",
                    date="Tue, 05 Mar 2024 10:00:00 -0500")
    outer = message(subject="Fwd: Quarterly numbers", body="See below.")
    outer.add_attachment(inner)  # message/rfc822
    assert b"Content-Type: message/rfc822" in bytes(outer)
    doc = one(eml(tmp_path / "fwd.eml", outer))
    assert text(doc) == ("Fwd: Quarterly numbers\nSee below.\n\nForwarded message\nFrom: Dana <dana@example.com>\n"
                         "Date: Tue, 05 Mar 2024 10:00:00 -0500\nSubject: Quarterly numbers\n\n"
                         "Revenue rose ten percent.")
    assert "attachments" not in doc.metadata


def test_an_mbox_is_a_document_per_message_by_message_id_else_by_number(tmp_path):
    """A missing Message-ID, one an earlier message had, or one that is no one word: by the
    message's number (from 1), as a record without an id goes by its line; a message that
    is no mail is skipped by its line, and the messages after it are read."""
    path = mbox(tmp_path / "box.mbox",
                message("One", "From the first message.", "<m1@example.org>"),  # a body line written ">From"
                message("Two", "The second has no id."),
                message("Three", "The third repeats the first's id.", "<m1@example.org>"),
                b"no headers here, just words\n\nand more words\n",
                message("Five", "The fifth is fine.", "<m5@example.org>"),
                message("Six", "The sixth says 2.", "<2>"),  # the id the second message got: a duplicate
                message("Seven", "No id is two words.", "<two words@example.org>"))
    lines = from_lines(path)
    assert len(lines) == 7
    got = load(path)
    assert [(d.key, d.where, text(d)) if isinstance(d, Document) else d for d in got] == [
        (f"{path}#m1@example.org", f"{path}:{lines[0]}", "One\nFrom the first message."),
        (f"{path}#2", f"{path}:{lines[1]}", "Two\nThe second has no id."),
        (f"{path}#3", f"{path}:{lines[2]}", "Three\nThe third repeats the first's id."),
        Skipped(f"{path}:{lines[3]}", mail.NOT_MAIL),
        (f"{path}#m5@example.org", f"{path}:{lines[4]}", "Five\nThe fifth is fine."),
        Skipped(f"{path}:{lines[5]}", "duplicate id 2"),
        (f"{path}#7", f"{path}:{lines[6]}", "Seven\nNo id is two words."),
    ]
    assert got[2].metadata == {
        "path": path, "type": "mbox", "from": ["ann@example.org"], "to": ["bob@example.com", "carol@example.net"],
        "subject": "Three", "title": "Three", "date": "2024-03-01T08:30:00+00:00", "message_id": "m1@example.org"}


def test_every_from_line_starts_a_message_as_pythons_mailbox_reads_it(tmp_path):
    """A "From " line of a body its writer did not escape cuts the message there (what
    follows, no mail, is skipped by its line); a blank line before one is not needed."""
    path = tmp_path / "raw.mbox"
    path.write_bytes(b"From a@x Mon Apr  1 10:00:00 2024\nSubject: First\nMessage-ID: <1@x>\n\nHello.\n"
                     b"From here on it is a body line.\nStill the body.\n"
                     b"From b@x Mon Apr  1 11:00:00 2024\nSubject: Second\n\nBye.\n")
    path = str(path)
    assert [(d.key, text(d)) if isinstance(d, Document) else d for d in load(path)] == [
        (f"{path}#1@x", "First\nHello."), Skipped(f"{path}:6", mail.NOT_MAIL), (f"{path}#3", "Second\nBye.")]
    assert [m.get("subject") for m in mailbox.mbox(path)] == ["First", None, "Second"]  # the same three


def test_a_message_hashes_the_same_wherever_it_is_in_a_mailbox_and_with_crlf_lines(tmp_path):
    a, b = message("One", "First line.\nSecond line.", "<m1@x>"), message("Two", "Second.", "<m2@x>")
    ab = mbox(tmp_path / "ab.mbox", a, b)
    crlf = tmp_path / "crlf.mbox"  # mail's own line ends, as some exporters keep them
    crlf.write_bytes(open(ab, "rb").read().replace(b"\n", b"\r\n"))
    docs = load(ab) + load(mbox(tmp_path / "ba.mbox", b, a)) + load(crlf)
    assert text(docs[-2]) == "One\nFirst line.\nSecond line."
    hashes = {d.key.rsplit("#", 1)[1]: set() for d in docs}
    for d in docs:
        hashes[d.key.rsplit("#", 1)[1]].add(d.content_hash)
    assert {k: len(v) for k, v in hashes.items()} == {"m1@x": 1, "m2@x": 1}


def test_files_that_are_not_mail_are_one_line_skips(tmp_path):
    (tmp_path / "notes.eml").write_text("Just a line of notes,\nnot a mail message at all.\n")
    (tmp_path / "blank.eml").write_text("\n\n")
    (tmp_path / "list.mbox").write_text("milk\neggs\n")
    (tmp_path / "empty.mbox").write_bytes(b"")
    (tmp_path / "nobody.eml").write_bytes(bytes(message(subject="", body="")))
    p = lambda name: str(tmp_path / name)  # noqa: E731
    assert list(iter_documents([tmp_path])) == [
        Skipped(p("blank.eml"), "empty file"),
        Skipped(p("empty.mbox"), "empty file"),
        Skipped(p("list.mbox"), mail.NOT_MBOX),
        Skipped(p("nobody.eml"), mail.EMPTY),
        Skipped(p("notes.eml"), mail.NOT_MAIL),
    ]


def test_a_big_message_is_read_to_the_limit_and_the_next_one_still_read(tmp_path, monkeypatch):
    """Bytes past MAX_MESSAGE (an attachment, in practice) are passed over, never held."""
    monkeypatch.setattr(mail, "MAX_MESSAGE", 64 << 10)
    monkeypatch.setattr(mail, "MAX_LINE", 4096)
    big = message("Big", "The text comes first.", "<big@x>")
    big.add_attachment(os.urandom(1 << 20), maintype="application", subtype="octet-stream", filename="blob.bin")
    long_line = message("Long", "word " * 100_000, "<long@x>", cte="8bit")  # one line of 500 KB
    path = mbox(tmp_path / "big.mbox", big, long_line, message("After", "The next message.", "<after@x>"))
    assert os.path.getsize(path) > 1 << 20
    docs = load(path)
    assert [d.key.rsplit("#", 1)[1] for d in docs] == ["big@x", "long@x", "after@x"]
    assert text(docs[0]) == "Big\nThe text comes first." and docs[0].metadata["attachments"] == ["blob.bin"]
    assert text(docs[1]).startswith("Long\nword word") and len(text(docs[1])) < 64 << 10
    assert text(docs[2]) == "After\nThe next message."


def test_mangled_mail_never_raises(tmp_path):
    """Bytes of real messages cut, flipped and spliced: every result is a Document whose
    metadata the store takes, or a one-line Skipped."""
    good = message(mid="<a@x>", cc="dee@example.com")
    good.add_alternative("<p>Hi <b>there</b></p>", subtype="html")
    good.add_attachment(b"data", maintype="application", subtype="pdf", filename="=?utf-8?q?r=C3=A9sum=C3=A9.pdf?=")
    raw = bytes(good)
    rng = random.Random(7)
    read = 0
    for i in range(300):
        data = bytearray(raw)
        for _ in range(rng.randint(1, 20)):
            at = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.4:
                data[at] = rng.randrange(256)
            elif choice < 0.7:
                del data[at:at + rng.randint(1, 40)]
            else:
                data[at:at] = rng.choice([b"\n", b"=?utf-8?b?", b"?=", b"<", b"\xff\xfe", b"boundary=", b"--", b":"])
        for name, content in (("m.eml", bytes(data)), ("m.mbox", b"From x\n" + bytes(data))):
            path = tmp_path / f"{i}{name}"
            path.write_bytes(content)
            for doc in load_file(str(path)):
                if isinstance(doc, Skipped):
                    assert "\n" not in doc.reason and not doc.transient, doc
                else:
                    read += 1
                    validation.json_value(doc.metadata, "metadata")
                    assert validation.lone_surrogate(doc.key) is None
                    assert validation.lone_surrogate(text(doc)) is None
            path.unlink()
    assert read > 300  # most survive as mail: the test reaches the reader, not only the skips


# ---------------------------------------------------------------- end to end, the real model


def hits(*args):
    return json.loads(ok(run("search", *args, "--json")).stdout)


def test_index_search_by_sender_and_date_then_append_to_the_mailbox(home, tmp_path):
    mailbox_dir = tmp_path / "mail"
    mailbox_dir.mkdir()
    box = mbox(mailbox_dir / "inbox.mbox",
               message("Rocket launch", "The rocket carried a weather satellite into orbit.", "<r@x>",
                       date="Mon, 15 Jan 2024 08:00:00 +0000"),
               message("Bread", "Knead the dough and bake the loaf in a hot oven.", "<b@x>",
                       sender="Bob <bob@example.com>", date="Fri, 01 Mar 2024 00:30:00 +0100"),
               message("Cats", "Cats purr, chase mice and sleep most of the day.", "<c@x>",
                       sender="Bob <bob@example.com>", date="Wed, 10 Apr 2024 12:00:00 +0000"))
    garden = eml(mailbox_dir / "garden.eml", message(body="Tomato plants need full sun and deep watering."))
    said = ok(run("index", mailbox_dir, "--name", "mail")).stdout
    assert "mail: added 4, updated 0, unchanged 0, removed 0, skipped 0;" in said, said

    top = hits("mail", "a spacecraft in orbit", "-k", 1)[0]
    assert (top["id"], top["source"]) == (f"{box}#r@x", box)
    assert top["metadata"]["from"] == ["ann@example.org"] and top["metadata"]["type"] == "mbox"
    assert hits("mail", "watering vegetables", "-k", 1)[0]["id"] == garden

    # by sender: a list value matches by any item; Ann wrote the rocket mail and the garden one
    assert {h["id"] for h in hits("mail", "anything", "--where", "from=bob@example.com", "--docs")} == \
        {f"{box}#b@x", f"{box}#c@x"}
    # by date (UTC ISO text): the bread mail, sent on 1 March at 00:30 in +01:00, is 2024-02-29T23:30Z
    assert {h["id"] for h in hits("mail", "anything", "--where", "date>=2024-03", "--docs")} == \
        {f"{box}#c@x", garden}
    assert [h["id"] for h in hits("mail", "anything", "--where", "date>=2024-03",
                                  "--where", "date<2024-04", "--docs")] == [garden]

    mb = mailbox.mbox(box)  # append one message: only it is embedded
    mb.add(message("Garden tools", "Sharpen the pruning shears before spring.", "<g@x>"))
    mb.flush()
    mb.close()
    said = ok(run("index", mailbox_dir, "--name", "mail")).stdout
    assert "mail: added 1, updated 0, unchanged 4, removed 0, skipped 0;" in said, said
    assert hits("mail", "cutting tools for the garden", "-k", 1)[0]["id"] == f"{box}#g@x"


def test_dry_run_and_a_moved_mailbox_reused(home, tmp_path):
    folder = tmp_path / "mail"
    folder.mkdir()
    box = mbox(folder / "a.mbox", message("One", "Cats purr.", "<1@x>"), message("Two", "Dogs bark."))
    letter = eml(folder / "letter.eml", message(body="Rockets fly."))
    out = ok(run("index", folder, "--name", "m", "--dry-run")).stdout.splitlines()
    assert out[0] == ("m (dry run, nothing written): would add 3, update 0, remove 0; unchanged 0, "
                      "skipped 0; the collection would be created")
    assert sorted(out[1:]) == sorted(f"+ {k}" for k in (f"{box}#1@x", f"{box}#2", letter))
    assert not home.exists()

    ok(run("index", folder, "--name", "m"))
    os.rename(folder / "a.mbox", folder / "b.mbox")
    os.rename(folder / "letter.eml", folder / "moved.eml")
    said = ok(run("index", folder, "--name", "m")).stdout
    assert "m: added 3, updated 0, unchanged 0, removed 3, skipped 0; 3 reused (moved or copied: " \
           "not embedded);" in said, said
