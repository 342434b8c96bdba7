"""Maildir folders (loaders.is_maildir, maildir_message; mail.py reads each message as an
.eml), written by the standard library's mailbox.Maildir, walked, indexed end to end
through the CLI with the real model, and followed by a watch."""
import json
import mailbox
import os
import shutil

from semsearch.loaders import Document, Selection, file_stamps, list_files, load_file
from semsearch.watch import watch_files

from test_cli import ok, run
from test_mail import message
from test_watch import Script, texts


def maildir(path, *messages, folders=()) -> mailbox.Maildir:
    """A Maildir holding ``messages`` in new/, as a delivery agent leaves them, and Maildir++
    folders (.Sent...) made by mailbox.Maildir.add_folder."""
    box = mailbox.Maildir(path, create=True)
    for m in messages:
        box.add(m)
    for name in folders:
        box.add_folder(name)
    return box


def keys(box: mailbox.Maildir) -> list[str]:
    """The paths of a Maildir's messages, in the order of their names."""
    return sorted(os.path.join(box._path, box._lookup(k)) for k in box.keys())


def read(box: mailbox.Maildir, key: str) -> str:
    """What mutt does when a new message is read: moved to cur/, flagged seen (S), by a
    rename: its name changes, its bytes do not. The new path."""
    old = os.path.join(box._path, box._lookup(key))
    new = os.path.join(box._path, "cur", os.path.basename(old) + ":2,S")
    os.rename(old, new)
    box._refresh()
    return new


def mail_folder(tmp_path):
    """A folder of notes and a Maildir with a Sent folder (Maildir++), a message half
    delivered in tmp/ and the files Dovecot keeps in a Maildir."""
    folder = tmp_path / "home"
    folder.mkdir()
    (folder / "notes.md").write_text("Knead the dough and bake the loaf in a hot oven.\n")
    inbox = maildir(folder / "Maildir",
                    message("Rocket launch", "The rocket carried a weather satellite into orbit.", "<r@x>"),
                    message("Cats", "Cats purr, chase mice and sleep most of the day.", "<c@x>",
                            sender="Bob <bob@example.com>"), folders=["Sent"])
    sent = inbox.get_folder("Sent")
    sent.add(message("Tomatoes", "Tomato plants need full sun and deep watering.", "<t@x>",
                     sender="Me <me@example.net>"))
    (folder / "Maildir" / "tmp" / "1700000000.M1P1.host").write_bytes(
        bytes(message("Half delivered", "A message still being written by the delivery agent.")))
    (folder / "Maildir" / "dovecot-uidlist").write_text("3 V1700000000 N4\n")
    (folder / "Maildir" / ".Sent" / "dovecot.index.log").write_bytes(b"\x01\x02binary index")
    return folder, inbox, sent


def test_the_walk_takes_cur_and_new_of_each_maildir_never_tmp(tmp_path):
    folder, inbox, sent = mail_folder(tmp_path)
    messages = keys(inbox) + keys(sent)
    assert all("/new/" in m and "." in os.path.basename(m) for m in messages)  # as delivered: 1700000000.M1P2.host
    expected = sorted(messages + [str(folder / "notes.md")])
    assert sorted(list_files([folder])) == expected  # not tmp/, not Dovecot's files
    assert sorted(s[0] for s in file_stamps([folder])) == expected  # what a watch compares
    assert sorted(list_files([folder], Selection.of(exclude=".Sent"))) == sorted(keys(inbox) + [str(folder / "notes.md")])
    assert list_files([folder], Selection.of(glob="*.md")) == [str(folder / "notes.md")]
    (folder / ".gitignore").write_text(".Sent/\n")
    assert sorted(list_files([folder], Selection.of(gitignore=True))) == sorted(keys(inbox) + [str(folder / "notes.md")])
    (folder / ".gitignore").unlink()
    work = maildir(folder / "Maildir" / "Work", message("Plan", "The plan for the quarter."))  # mbsync's Verbatim
    assert sorted(list_files([folder])) == sorted(expected + keys(work))

    moved = read(inbox, inbox.keys()[0])
    doc, = load_file(moved)
    assert isinstance(doc, Document), doc
    assert (doc.key, doc.source) == (moved, moved)
    assert "".join(doc.segments()).startswith(("Rocket launch\n", "Cats\n"))
    assert doc.metadata["type"] == "eml" and doc.metadata["from"] in (["ann@example.org"], ["bob@example.com"])

    # a folder with new/ and cur/ but no tmp/ is no Maildir: its files are what they are
    other = tmp_path / "project"
    (other / "new").mkdir(parents=True)
    (other / "cur").mkdir()
    (other / "new" / "report").write_text("From: a@b\n\nnot mail")
    (other / "top.txt").write_text("read")
    assert [f if isinstance(f, str) else (f.source, f.reason) for f in list_files([other])] == \
        [(str(other / "new" / "report"), "unsupported type (no extension)"), str(other / "top.txt")]


def hits(*args):
    return json.loads(ok(run("search", *args, "--json")).stdout)


def test_index_a_maildir_search_by_sender_and_a_message_read_in_mutt_is_reused(home, tmp_path):
    folder, inbox, sent = mail_folder(tmp_path)
    plan = ok(run("index", folder, "--name", "mail", "--dry-run")).stdout.splitlines()
    assert plan[0] == ("mail (dry run, nothing written): would add 4, update 0, remove 0; unchanged 0, "
                       "skipped 0; the collection would be created")
    expected = sorted(keys(inbox) + keys(sent) + [str(folder / "notes.md")])
    assert sorted(line[2:] for line in plan[1:]) == expected
    said = ok(run("index", folder, "--name", "mail")).stdout
    assert "mail: added 4, updated 0, unchanged 0, removed 0, skipped 0;" in said, said

    top = hits("mail", "a spacecraft in orbit", "-k", 1)[0]
    assert top["id"] in keys(inbox) and top["metadata"]["subject"] == "Rocket launch"
    assert [h["id"] for h in hits("mail", "pets", "--where", "from=bob@example.com", "--docs")] == \
        [k for k in keys(inbox) if "Cats" in open(k).read()]
    assert [h["id"] for h in hits("mail", "garden", "--where", "from=me@example.net", "--docs")] == keys(sent)
    assert not [h for h in hits("mail", "delivery agent", "--docs") if "/Maildir/tmp/" in h["id"]]

    # mutt reads the rocket mail: new/NAME becomes cur/NAME:2,S. The dry run and the run agree.
    rocket = top["id"]
    key = next(k for k in inbox.keys() if os.path.join(inbox._path, inbox._lookup(k)) == rocket)
    moved = read(inbox, key)
    plan = ok(run("index", folder, "--name", "mail", "--dry-run")).stdout.splitlines()
    assert plan[0] == ("mail (dry run, nothing written): would add 1, update 0, remove 1; unchanged 3, "
                       "skipped 0; 1 of those added or updated reused (moved or copied: not embedded)")
    assert plan[1:] == [f"+ {moved}  (reused)", f"- {rocket}"]
    said = ok(run("index", folder, "--name", "mail")).stdout
    assert "mail: added 1, updated 0, unchanged 3, removed 1, skipped 0; 1 reused (moved or copied: " \
           "not embedded);" in said, said
    assert hits("mail", "a spacecraft in orbit", "-k", 1)[0]["id"] == moved

    # the Sent folder deleted: its message goes with it
    shutil.rmtree(folder / "Maildir" / ".Sent")
    said = ok(run("index", folder, "--name", "mail")).stdout
    assert "mail: added 0, updated 0, unchanged 3, removed 1, skipped 0;" in said, said


def test_a_watch_takes_a_delivered_message_and_follows_one_read(home, tmp_path, embedder):
    folder, inbox, sent = mail_folder(tmp_path)
    passes, new = [], []

    def deliver():  # mailbox.Maildir.add writes in tmp/, then renames into new/: as a delivery agent does
        assert [p.report.added for p in passes] == [4]
        new.append(inbox.add(message("Bread", "Sourdough needs a starter fed every day.", "<b@x>")))

    def read_it():
        assert [(p.report.added, p.report.removed) for p in passes] == [(4, 0), (1, 0)]
        new.append(read(inbox, new[0]))

    def done():
        assert [(p.report.added, p.report.removed, p.report.reused) for p in passes] == \
            [(4, 0, 0), (1, 0, 0), (1, 1, 1)]

    watch_files("mail", [folder], every=0.01, stop=Script(deliver, read_it, done), on_pass=passes.append,
                embedder=embedder)
    assert set(texts("mail")) == {os.path.basename(p) for p in keys(inbox) + keys(sent)} | {"notes.md"}
    assert os.path.basename(new[1]) in texts("mail")


def test_index_on_ray_reads_a_maildir_as_one_process_does(home, tmp_path, ray_local):
    from semsearch.collection import Collection
    from semsearch.distributed import index_paths
    from test_notebook import ANALYSIS, write

    folder, inbox, _ = mail_folder(tmp_path)
    write(folder / "sales.ipynb", ANALYSIS)
    with Collection.create("local") as local, Collection.create("onray") as onray:
        def both():
            r_local, r_ray = local.add_files([folder]), index_paths(onray, [folder])
            assert (r_ray.added, r_ray.removed, r_ray.skipped) == (r_local.added, r_local.removed, r_local.skipped)
            assert sorted(d.id for d in onray.documents()) == sorted(d.id for d in local.documents())
            return r_ray.added, r_ray.removed

        assert both() == (5, 0)
        read(inbox, inbox.keys()[0])  # a message read in mutt: renamed into cur/
        assert both() == (1, 1)
