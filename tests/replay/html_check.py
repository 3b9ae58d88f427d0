"""A strict-enough reading of the report: tags nest and close, images are PNGs, and the
trigger table's rows."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

VOID = {"meta", "img", "br", "hr", "link", "input"}


class Report(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[tuple[str, bytes]] = []  # (alt, PNG bytes)
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self.doctype = text.lstrip().lower().startswith("<!doctype html>")
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"not closed: {self.stack}")

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            src = attrs.get("src", "")
            prefix = "data:image/png;base64,"
            if not src.startswith(prefix):
                self.errors.append(f"image not embedded: {src[:40]}")
            else:
                self.images.append((attrs.get("alt", ""), base64.b64decode(src[len(prefix):], validate=True)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def table_with(self, header: str) -> list[dict[str, str]]:
        """The rows of the table whose header row names `header`, as dicts."""
        for table in self.tables:
            if table and header in table[0]:
                return [dict(zip(table[0], row)) for row in table[1:]]
        raise AssertionError(f"no table with a {header!r} column")


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
