"""Text of e-mail: one message per .eml file or Maildir message file (loaders.maildir_message),
every message of an .mbox mailbox.

Standard library only (email, no extra to install). A message's text is its subject
(the one title rule, loaders.titled) and its readable body: the text/plain part of a
multipart/alternative, else its HTML through the HTML loader's parser, and a forwarded
message (message/rfc822) with its sender, date and subject. Attachments are listed by
file name, never decoded. Mail is untrusted: a message that cannot be read is one
Skipped (an mbox's names its line) and the run goes on; an mbox is read message by
message, each at most MAX_MESSAGE bytes, so a mailbox of many GB never sits in memory.

An mbox's messages are records (loaders._records_to_docs: its id and duplicate rules):
id PATH#MESSAGE-ID (without the angle brackets), or the message's number in the file
(from 1) where it has none, none that is one word, or one an earlier message had; the
content hash is of what is read from the message, not of its place, so appending to a
mailbox embeds the new messages only, and a message moved to another mailbox is reused.
"""
from __future__ import annotations

import datetime
import email.errors
import email.header
import email.utils
import hashlib
import re
from email.message import Message
from email.parser import BytesParser
from typing import Iterator

from .validation import MAX_ID_CHARS
from .loaders import SEGMENT_BYTES, Document, Skipped, _HTMLText, _records_to_docs, decode_text, split_text, titled

MAX_MESSAGE = 32 << 20  # bytes read of one message: its text comes first, attachments past it are passed over
MAX_LINE = 1 << 20  # an mbox is read a line at a time, a line this long at most at once
MAX_DEPTH = 20  # parts nested deeper (a crafted message) are not read
ADDRESS_FIELDS = ("from", "to", "cc")
MAIL_HEADERS = frozenset({"from", "to", "cc", "subject", "date", "message-id"})  # one at least, or it is no mail
NOT_MAIL = "not a mail message (no From, To, Subject, Date or Message-ID header)"
NOT_MBOX = "not an mbox mailbox (its first line is no 'From ' line)"
EMPTY = "empty message"
_PARSER = BytesParser()  # compat32: headers are read here (see _raw_headers)
_SURROGATE = re.compile("[\ud800-\udfff]")
_ID = r"([^<>\s\x00-\x1f\x7f]+)"  # a message id: one word, no control character
_ID_IN_BRACKETS = f"<{_ID}>"
_ESCAPED_FROM = re.compile(rb">+From ")  # mboxrd: a body line "From ..." is written ">From ..."


def load_mail(path: str, ext: str) -> Iterator[Document | Skipped]:
    """The Document of an .eml file (or of a Maildir's message: ``ext`` "maildir"), or one
    for each message of an .mbox; Skipped for what cannot be read. Never raises for bad mail (load_file catches what the file system does)."""
    if ext == ".eml" or ext == "maildir":
        yield _load_eml(path)
    else:
        yield from _load_mbox(path)


def _load_eml(path: str) -> Document | Skipped:
    """One message, its id the path and its hash the file's bytes', as any file's: an .eml
    file, or a message of a Maildir (loaders.maildir_message: a file in its cur/ or new/,
    named without extension), which is one too (type eml): moved from new/ to cur/, or
    renamed as its flags change, it is the same bytes, reused, not embedded again."""
    with open(path, "rb") as f:
        data = f.read(MAX_MESSAGE)
        h = hashlib.sha256(data)
        while block := f.read(SEGMENT_BYTES):
            h.update(block)
    if not data.strip():
        return Skipped(path, "empty file")
    try:
        message = _Message(data)
    except Exception as e:  # the email package raises on some malformed headers
        return Skipped(path, _unreadable(e))
    if message.error:
        return Skipped(path, message.error)
    meta = {"path": path, "type": "eml", **message.meta}
    return Document(path, path, meta, h.hexdigest(), lambda: split_text(message.text), message.replaced)


def _load_mbox(path: str) -> Iterator[Document | Skipped]:
    with open(path, "rb") as f:
        first = f.readline(MAX_LINE)
        while first and not first.strip():
            first = f.readline(MAX_LINE)
        if not first:
            yield Skipped(path, "empty file")
            return
        if not first.startswith(b"From "):
            yield Skipped(path, NOT_MBOX)
            return
        f.seek(0)
        for doc in _records_to_docs(path, _mbox_records(f)):
            if isinstance(doc, Document):  # the record's "mail" field is its metadata
                doc.metadata = {"path": path, "type": "mbox", **doc.metadata["mail"]}
            yield doc


def _mbox_records(f) -> Iterator[tuple[str, int, object, str | None, int]]:
    """The items _records_to_docs takes, one per message: (its "From " line's number, its
    number, {"text", "id", "mail": metadata} or None, why it is no record, U+FFFD put in)."""
    ids: set[str] = set()
    for n, (line, data) in enumerate(_mbox_messages(f), 1):
        try:
            message = _Message(data)
        except Exception as e:
            yield str(line), n, None, _unreadable(e), 0
            continue
        if message.error:
            yield str(line), n, None, message.error, 0
            continue
        mid = message.meta.get("message_id")
        if mid in ids:  # the same id again: this one goes by its number
            mid = None
        elif mid is not None:
            ids.add(mid)
        yield str(line), n, {"text": message.text, "id": mid, "mail": message.meta}, None, message.replaced


def _mbox_messages(f) -> Iterator[tuple[int, bytes]]:
    """(line number of its "From " line, its bytes) for each message of an mbox file, read
    a line at a time. Every line that starts with "From " starts a message, as Python's
    mailbox reads an mbox: writers write such a line of a body as ">From " (a message whose
    writer did not is cut there, and what follows, no mail, skipped); a ">From " line loses
    one ">" (mboxrd, and mboxo as near as it can be read). Bytes of a message beyond
    MAX_MESSAGE are passed over."""
    lineno, start, parts, size = 0, 0, [], 0
    whole_line = True  # the piece read starts a line
    while piece := f.readline(MAX_LINE):
        if whole_line:
            lineno += 1
            if piece.startswith(b"From "):
                if start:
                    yield start, b"".join(parts)
                start, parts, size = lineno, [], 0
                whole_line = piece.endswith(b"\n")
                continue
            if _ESCAPED_FROM.match(piece):
                piece = piece[1:]
        whole_line = piece.endswith(b"\n")
        if size < MAX_MESSAGE:
            parts.append(piece[:MAX_MESSAGE - size])
            size += len(parts[-1])
    if start:
        yield start, b"".join(parts)


class _Message:
    """What is read of one message: ``text`` (subject, then body), ``meta`` (its metadata,
    without the loader's path and type), ``replaced`` (U+FFFD put in for bytes not in
    their charset), or ``error``: why it is not mail."""

    def __init__(self, data: bytes):
        self.replaced = 0
        self.attachments: list[str] = []
        self.error = None
        msg = _PARSER.parsebytes(data)
        headers = _raw_headers(msg)
        if not headers.keys() & MAIL_HEADERS:
            self.error = NOT_MAIL
            return
        self.meta = self._headers(headers)
        body = _joined(self._body(msg, 0))
        if self.attachments:
            self.meta["attachments"] = self.attachments
        self.text = titled(self.meta, self.meta.get("subject", ""), body)
        if not self.text:
            self.error = EMPTY

    def _headers(self, headers: dict[str, list[str]]) -> dict:
        meta = {}
        for name in ADDRESS_FIELDS:  # user@host only: a display name may hold a comma in an encoded word
            addresses = [self._clean(a) for _, a in email.utils.getaddresses(headers.get(name, [])) if "@" in a]
            if addresses:
                meta[name] = addresses
        subject = self._header(headers, "subject")
        if subject:
            meta["subject"] = subject
        date = _iso_date(headers.get("date", [""])[0])
        if date:
            meta["date"] = date
        for name, header in (("message_id", "message-id"), ("in_reply_to", "in-reply-to")):
            value = _msg_id(self._clean(headers.get(header, [""])[0]))
            if value:
                meta[name] = value
        return meta

    def _header(self, headers: dict[str, list[str]], name: str) -> str:
        """The first header of that name as one line of text."""
        return " ".join(self._words(headers.get(name, [""])[0]).split())

    def _words(self, value: str) -> str:
        """A header's text, its encoded words (=?charset?q?...?=) decoded."""
        try:
            chunks = email.header.decode_header(value)
        except email.errors.HeaderParseError:  # a broken encoded word: the text as it is
            return self._clean(value)
        return "".join(self._clean(c) if isinstance(c, str) else self._text(c, charset) for c, charset in chunks)

    def _body(self, part: Message, depth: int) -> Iterator[str]:
        """The readable text of a part, a piece per text part; attachments' names noted."""
        if depth > MAX_DEPTH:
            return
        kind = part.get_content_type()
        if kind == "message/rfc822":  # forwarded (inline or as an attachment): read as text too
            for inner in part.get_payload() if isinstance(part.get_payload(), list) else ():
                yield self._forwarded(inner, depth + 1)
            return
        name = part.get_filename()
        if part.get_content_disposition() == "attachment" or name is not None:
            self.attachments.append(" ".join(self._words(name).split()) if name else kind)
            return
        if part.is_multipart():
            subparts = part.get_payload()
            if kind == "multipart/alternative":  # one text in several forms: the plain one, else HTML, else the richest
                plain = [p for p in subparts if p.get_content_type() == "text/plain"]
                subparts = plain[:1] or [p for p in subparts if p.get_content_type() == "text/html"][:1] or subparts[-1:]
            for sub in subparts:
                yield from self._body(sub, depth + 1)
        elif kind == "text/plain":
            yield self._decoded(part)
        elif kind == "text/html":
            html = _HTMLText()
            html.feed(self._decoded(part))
            html.close()
            yield "".join(html.parts)

    def _forwarded(self, inner: Message, depth: int) -> str:
        """A forwarded message as text: its sender, date and subject, then its body."""
        headers = _raw_headers(inner)
        lines = ["Forwarded message"]
        for label in ("From", "Date", "Subject"):
            value = self._header(headers, label.lower())
            if value:
                lines.append(f"{label}: {value}")
        body = _joined(self._body(inner, depth))
        return "\n".join(lines) + (f"\n\n{body}" if body else "")

    def _decoded(self, part: Message) -> str:
        """A text part's body, its transfer encoding (quoted-printable, base64) undone, its
        lines ended by \\n (mail's own CRLF, kept in some mailboxes: one text either way)."""
        text = self._text(part.get_payload(decode=True) or b"", part.get_content_charset())
        return text.replace("\r\n", "\n")

    def _text(self, data: bytes, charset: str | None) -> str:
        """Bytes of a body or header in their charset; one unknown, or that they are not in,
        reads by the file rule (UTF-8, else Windows-1252: loaders.decode_text)."""
        if charset:
            try:
                return data.decode(charset)
            except (LookupError, ValueError):  # ValueError: UnicodeDecodeError, a NUL in the name
                pass
        text, replaced = decode_text(data)
        self.replaced += replaced
        return text

    def _clean(self, text: str) -> str:
        """Text without the lone surrogates the parser leaves for raw 8-bit bytes: those
        bytes read by the file rule (JSON, and the store, refuse surrogates)."""
        if not _SURROGATE.search(text):
            return text
        return self._text(text.encode("utf-8", "surrogateescape"), None)


def _raw_headers(msg: Message) -> dict[str, list[str]]:
    """A message's headers by lower-case name, each unfolded, as written (read here, not by
    the email package's header registry, which took ~3 ms a message)."""
    headers: dict[str, list[str]] = {}
    for name, value in msg.raw_items():
        headers.setdefault(name.lower(), []).append(re.sub(r"\r?\n", "", value))
    return headers


def _joined(pieces) -> str:
    """Texts of several parts, a blank line between."""
    return "\n\n".join(text for piece in pieces if (text := piece.strip()))


def _iso_date(value: str) -> str | None:
    """A Date header in UTC as ISO 8601 ("2024-03-05T09:30:00+00:00"), so that dates
    compare in character order whatever the sender's offset; None for no valid date. A
    date without an offset ("-0000") is taken as UTC."""
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        return when.astimezone(datetime.timezone.utc).isoformat()
    except (TypeError, ValueError, IndexError, OverflowError):  # no date, or a year out of range
        return None


def _msg_id(value: str) -> str | None:
    """The first <id> of a Message-ID or In-Reply-To header, without its brackets (the
    whole value where it has none); None where that is no one word of printable characters
    up to MAX_ID_CHARS (a message's id is then its number)."""
    match = re.search(_ID_IN_BRACKETS, value) or re.fullmatch(_ID, value.strip())
    word = match and match.group(1)
    return word if word and len(word) <= MAX_ID_CHARS else None


def _unreadable(e: Exception) -> str:
    return " ".join(f"unreadable message: {type(e).__name__}: {e}".split())
