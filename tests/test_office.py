"""Word, PowerPoint, OpenDocument and EPUB files (semsearch/office.py), made by the real
writers (python-docx, python-pptx, odfpy, EbookLib), read by the loader and indexed end to
end with the real model; bad ones are skipped with a one-line reason and the run goes on."""
import zipfile
from collections import Counter

import pytest
from click.testing import CliRunner

from semsearch.cli import cli
from semsearch.loaders import Document, Skipped, iter_documents
from semsearch.office import MAX_UNPACKED, OLE_MAGIC

docx = pytest.importorskip("docx")
pptx = pytest.importorskip("pptx")
pytest.importorskip("odf")
epub = pytest.importorskip("ebooklib.epub")

GARDEN = "Tomato plants need full sun and deep watering twice a week during the summer."
ROCKET = "The rocket launch carried a weather satellite into orbit around the Earth."
BREAD = "Knead the dough, let it rise overnight, then bake the loaf in a hot oven."
CATS = "Cats are small furry pets that purr, chase mice and sleep most of the day."


def load(*paths):
    return list(iter_documents(paths))


def one_doc(path) -> Document:
    (doc,) = load(path)
    assert isinstance(doc, Document), doc
    return doc


def text_of(doc: Document) -> str:
    return "".join(doc.segments())


def make_docx(path, sentence=GARDEN):
    d = docx.Document()
    d.core_properties.title = "Garden  Notes"
    d.add_heading("Tomatoes", 1)
    p = d.add_paragraph("Water them\tdaily")
    p.add_run().add_break()
    p.add_run("in summer")
    table = d.add_table(rows=2, cols=2)
    for cell, word in zip([c for row in table.rows for c in row.cells], ["alpha", "beta", "gamma", "delta"]):
        cell.text = word
    d.add_paragraph(sentence)
    d.save(path)
    return path


def make_pptx(path, slides=12, first=ROCKET):
    deck = pptx.Presentation()
    for i in range(1, slides + 1):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = f"Slide {i}"
        slide.placeholders[1].text = first if i == 1 else f"point {i}\nmore {i}"
    deck.save(path)
    return path


def make_odt(path, sentence=BREAD):
    from odf import dc, teletype
    from odf.opendocument import OpenDocumentText
    from odf.text import H, P

    doc = OpenDocumentText()
    doc.meta.addElement(dc.Title(text="Baking Day"))
    doc.text.addElement(H(outlinelevel=1, text="Bread"))
    p = P()
    teletype.addTextToElement(p, "flour   water\tsalt\nyeast")
    doc.text.addElement(p)
    doc.text.addElement(P(text=sentence))
    doc.save(str(path))
    return path


def make_epub(path, sentence=CATS):
    book = epub.EpubBook()
    book.set_identifier("cats-1")
    book.set_title("All About Cats")
    book.set_language("en")
    chapters = []
    for i, body in enumerate([f"<p>{sentence}</p>", "<p>Kittens play.</p>", "<p>Old cats nap.</p>"], 1):
        c = epub.EpubHtml(title=f"Part {i}", file_name=f"ch{i}.xhtml")
        c.content = f"<h1>Chapter {i}</h1>{body}"
        book.add_item(c)
        chapters.append(c)
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = [chapters[2], chapters[0], chapters[1]]  # the manifest lists them 1, 2, 3
    epub.write_epub(str(path), book)
    return path


def test_docx_paragraphs_table_cells_tab_break_and_title(tmp_path):
    doc = one_doc(make_docx(tmp_path / "notes.docx"))
    assert doc.metadata == {"path": str(tmp_path / "notes.docx"), "type": "docx", "title": "Garden Notes"}
    assert text_of(doc) == f"Garden Notes\nTomatoes\nWater them\tdaily\nin summer\nalpha\nbeta\ngamma\ndelta\n{GARDEN}"


def test_docx_footnotes_follow_the_body(tmp_path):
    """python-docx writes no footnotes part: one is added to its file as Word writes it."""
    path = make_docx(tmp_path / "notes.docx")
    notes = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
             '<w:footnotes xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
             '<w:footnote w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:footnote>'
             '<w:footnote w:id="1"><w:p><w:r><w:t>See the seed catalogue.</w:t></w:r></w:p></w:footnote>'
             '</w:footnotes>')
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("word/footnotes.xml", notes)
    assert text_of(one_doc(path)).endswith(f"{GARDEN}\n\nSee the seed catalogue.")


def test_pptx_slides_in_presentation_order_not_name_order(tmp_path):
    doc = one_doc(make_pptx(tmp_path / "deck.pptx"))
    assert doc.metadata == {"path": str(tmp_path / "deck.pptx"), "type": "pptx", "slides": 12}
    slides = text_of(doc).split("\n\n")
    assert slides[0] == f"Slide 1\n{ROCKET}"
    assert slides[1:] == [f"Slide {i}\npoint {i}\nmore {i}" for i in range(2, 13)]  # not 1, 10, 11, 12, 2


def test_odt_headings_spaces_tabs_line_breaks_and_title(tmp_path):
    doc = one_doc(make_odt(tmp_path / "bake.odt"))
    assert doc.metadata == {"path": str(tmp_path / "bake.odt"), "type": "odt", "title": "Baking Day"}
    assert text_of(doc) == f"Baking Day\nBread\nflour   water\tsalt\nyeast\n{BREAD}"


def test_epub_chapters_in_spine_order_through_the_html_reader(tmp_path):
    doc = one_doc(make_epub(tmp_path / "cats.epub"))
    assert doc.metadata == {"path": str(tmp_path / "cats.epub"), "type": "epub", "title": "All About Cats"}
    text = text_of(doc)
    assert text.split() == ["All", "About", "Cats", "Chapter", "3", "Old", "cats", "nap.",
                            "Chapter", "1", *CATS.split(), "Chapter", "2", "Kittens", "play."]
    assert "<" not in text and "Part 1" not in text  # tags gone; chapter <title>s are not text


def test_an_epub_whose_xhtml_has_a_doctype_and_a_named_entity_is_read(tmp_path):
    """EPUB 2 XHTML starts with an XHTML 1.1 DOCTYPE (no internal subset) and may use &nbsp;."""
    path = make_epub(tmp_path / "cats.epub")
    old = zipfile.ZipFile(path)
    with zipfile.ZipFile(tmp_path / "epub2.epub", "w") as new:
        for info in old.infolist():
            data = old.read(info)
            if info.filename.endswith("ch2.xhtml"):
                data = ('<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.1//EN" '
                        '"http://www.w3.org/TR/xhtml11/DTD/xhtml11.dtd">\n<html xmlns="http://www.w3.org/1999/xhtml">'
                        '<head><title>x</title></head><body><p>Kittens&nbsp;play&amp;grow.</p></body></html>').encode()
            new.writestr(info, data)
    assert "Kittens\xa0play&grow." in text_of(one_doc(tmp_path / "epub2.epub"))


def _replace_member(path, name, data: bytes):
    """The file with one member's bytes replaced, everything else as its writer made it."""
    old = zipfile.ZipFile(path)
    new_path = path.with_name("bad-" + path.name)
    with zipfile.ZipFile(new_path, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            new.writestr(info, data if info.filename == name else old.read(info))
    return new_path


@pytest.fixture
def bad_files(tmp_path):
    """Each bad file and the Skipped the loader gives it."""
    folder = tmp_path / "bad"
    folder.mkdir()
    good = make_docx(tmp_path / "good.docx")
    (folder / "text.docx").write_text("just some text, not a zip\n")
    (folder / "half.docx").write_bytes(good.read_bytes()[:2000])  # caught half-written
    (folder / "locked.docx").write_bytes(OLE_MAGIC + bytes(4096))
    (folder / "zero.pptx").write_bytes(b"")  # Explorer's "New > Presentation"
    docx.Document().save(folder / "empty.docx")
    bomb = folder / "bomb.docx"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:  # ~260 KB on disk
        with z.open("word/document.xml", "w") as member:
            for _ in range((MAX_UNPACKED >> 20) + 1):
                member.write(bytes(1 << 20))
    laughs = (b'<?xml version="1.0"?><!DOCTYPE w:document [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;">]>'
              b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
              b'<w:p><w:r><w:t>&b;</w:t></w:r></w:p></w:body></w:document>')
    _replace_member(good, "word/document.xml", laughs).rename(folder / "laughs.docx")
    broken = b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
    _replace_member(good, "word/document.xml", broken).rename(folder / "broken.docx")
    with zipfile.ZipFile(make_odt(tmp_path / "b.odt")) as z, zipfile.ZipFile(folder / "nocontent.odt", "w") as out:
        for info in z.infolist():
            if info.filename != "content.xml":
                out.writestr(info, z.read(info))
    p = lambda name: str(folder / name)  # noqa: E731
    return folder, [
        Skipped(p("bomb.docx"), f"too large: over {MAX_UNPACKED >> 20} MiB unpacked (a zip bomb?)"),
        Skipped(p("broken.docx"), f"not a valid .docx file (word/document.xml: no element found: line 1, column {len(broken)})"),
        Skipped(p("empty.docx"), "empty file"),
        Skipped(p("half.docx"), "not a valid .docx file (truncated or corrupt zip)", transient=True),
        Skipped(p("laughs.docx"), "word/document.xml: XML with a DTD of its own (entity declarations) refused"),
        Skipped(p("locked.docx"), "encrypted (password-protected) document"),
        Skipped(p("nocontent.odt"), "not a valid .odt file (no content.xml)"),
        Skipped(p("text.docx"), "not a valid .docx file (not a zip)"),
        Skipped(p("zero.pptx"), "empty file"),
    ]


def test_bad_files_are_skipped_each_with_a_one_line_reason(bad_files):
    folder, expected = bad_files
    assert load(folder) == expected


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_index_a_folder_of_them_search_by_meaning_reindex_skips_unchanged(home, tmp_path, bad_files):
    folder, bad = bad_files
    make_docx(folder / "garden.docx")
    make_pptx(folder / "launch.pptx")
    make_odt(folder / "bread.odt")
    make_epub(folder / "cats.epub")
    result = run("index", folder, "--name", "office")
    assert result.exit_code == 0, result.output  # skipped files are reported, as for any type
    assert f"added 4, updated 0, unchanged 0, removed 0, skipped {len(bad)};" in result.stdout
    counts = Counter(s.reason for s in bad)
    assert sorted(result.stdout.splitlines()[1:1 + len(counts)]) == sorted(f"  skipped {n}: {r}" for r, n in counts.items())

    from semsearch.collection import Collection

    with Collection.open(home / "office") as coll:
        for query, name in [("how often to water vegetables in the garden", "garden.docx"),
                            ("a spacecraft put into orbit", "launch.pptx"),
                            ("making a loaf of bread in the oven", "bread.odt"),
                            ("furry animals that purr", "cats.epub")]:
            assert coll.search(query, k=1)[0].source == str(folder / name), query

    result = run("index", folder, "--name", "office")
    assert "added 0, updated 0, unchanged 4, removed 0" in result.stdout, result.output
    make_docx(folder / "garden.docx", sentence="Prune the roses in early spring before new growth.")
    result = run("index", folder, "--name", "office")
    assert "added 0, updated 1, unchanged 3, removed 0" in result.stdout, result.output
    with Collection.open(home / "office") as coll:
        assert coll.search("cutting back rose bushes", k=1)[0].source == str(folder / "garden.docx")


def test_odp_slides_in_order_without_speaker_notes(tmp_path):
    """An Impress deck, written by odfpy: its slides' text in document order, a blank line
    after each slide, the speaker notes left out (as a .pptx's), the title from meta.xml."""
    from odf import dc, draw, presentation
    from odf.opendocument import OpenDocumentPresentation
    from odf.style import MasterPage, PageLayout
    from odf.text import P

    deck = OpenDocumentPresentation()
    deck.meta.addElement(dc.Title(text="Launch  Review"))
    layout = PageLayout(name="layout")
    deck.automaticstyles.addElement(layout)
    master = MasterPage(name="master", pagelayoutname=layout)
    deck.masterstyles.addElement(master)
    for i in range(1, 12):
        page = draw.Page(name=f"page{i}", masterpagename=master)
        frame = draw.Frame(width="20cm", height="3cm", x="1cm", y="1cm")
        box = draw.TextBox()
        box.addElement(P(text=f"Slide {i}"))
        box.addElement(P(text=ROCKET if i == 1 else f"point {i}"))
        frame.addElement(box)
        page.addElement(frame)
        notes = presentation.Notes()
        notes_frame = draw.Frame(width="20cm", height="3cm", x="1cm", y="1cm")
        notes_box = draw.TextBox()
        notes_box.addElement(P(text=f"say hello {i}"))
        notes_frame.addElement(notes_box)
        notes.addElement(notes_frame)
        page.addElement(notes)
        deck.presentation.addElement(page)
    deck.save(str(tmp_path / "launch.odp"))
    doc = one_doc(tmp_path / "launch.odp")
    assert doc.metadata == {"path": str(tmp_path / "launch.odp"), "type": "odp", "title": "Launch Review"}
    title, slides = text_of(doc).split("\n", 1)
    assert title == "Launch Review"
    assert slides.strip().split("\n\n") == [f"Slide 1\n{ROCKET}"] + [f"Slide {i}\npoint {i}" for i in range(2, 12)]
