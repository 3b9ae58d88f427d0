"""A strict-enough reading of the report: tags nest and close, nothing is loaded from
elsewhere (no script or stylesheet by address: the file works offline), the plots
(plotly divs) and embedded images, and the trigger table's rows."""

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
        self.plots: list[str] = []  # ids of the plotly figures' divs
        self.inline_scripts: list[str] = []
        self.headings: list[tuple[str, str]] = []  # (tag, text) of h1-h4
        self._script: list[str] | None = None
        self._heading: tuple[str, list[str]] | None = None
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
        if tag == "script":
            if attrs.get("src"):
                self.errors.append(f"script loaded from elsewhere: {attrs['src'][:60]}")
            self._script = []
        if tag == "link" and attrs.get("href"):
            self.errors.append(f"resource loaded from elsewhere: {attrs['href'][:60]}")
        if tag == "div" and "plotly-graph-div" in (attrs.get("class") or "").split():
            self.plots.append(attrs.get("id", ""))
        if tag in ("h1", "h2", "h3", "h4"):
            self._heading = (tag, [])
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
        if tag == "script" and self._script is not None:
            self.inline_scripts.append("".join(self._script))
            self._script = None
        if self._heading is not None and tag == self._heading[0]:
            self.headings.append((tag, "".join(self._heading[1]).strip()))
            self._heading = None
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._script is not None:
            self._script.append(data)
        if self._heading is not None:
            self._heading[1].append(data)
        if self._cell is not None:
            self._cell.append(data)

    def table_with(self, header: str) -> list[dict[str, str]]:
        """The rows of the table whose header row names `header`, as dicts."""
        for table in self.tables:
            if table and header in table[0]:
                return [dict(zip(table[0], row)) for row in table[1:]]
        raise AssertionError(f"no table with a {header!r} column")


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
