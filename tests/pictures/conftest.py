"""One server for the picture tests (127.0.0.1, port 0), a client, and the SVG helpers."""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET

import pytest

from jitnet.client import Client
from jitnet.service.config import Config
from jitnet.service.server import create_server

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="package")
def address(tmp_path_factory, warmed):
    config = Config(host="127.0.0.1", port=0, log_level="WARNING",
                    data_dir=str(tmp_path_factory.mktemp("pictures")))
    handle = create_server(config, warm_up=lambda: None).start()  # `warmed` compiled them
    assert handle.wait_ready(30), f"not ready: {handle.startup_error!r}"
    yield f"127.0.0.1:{handle.port}"
    handle.drain(0).wait(10)


@pytest.fixture
def client(address):
    with Client(address) as c:
        yield c


_ids = itertools.count(1)


@pytest.fixture
def model_id(request) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)[:100] + f"-{next(_ids)}"


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
