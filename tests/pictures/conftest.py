"""The SVG helpers of the picture tests (the server, client and model ids are the shared ones:
tests/support/fixtures.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    """The SVG parsed (it must be well-formed XML with the SVG namespace)."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def texts(root: ET.Element) -> list[str]:
    """Every <text> element's text, its lines (tspans) joined by newlines."""
    return ["\n".join(t for t in el.itertext()) for el in root.iter(f"{SVG}text")]


def find_id(root: ET.Element, ident: str) -> ET.Element | None:
    return next((el for el in root.iter() if el.get("id") == ident), None)
