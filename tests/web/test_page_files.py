"""The page's files: shipped in the package, and written so that nothing from the server or
the user is ever rendered as HTML (text only), with no script or style inline (the
Content-Security-Policy forbids both) and nothing fetched from elsewhere."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "service" / "web" / "static"
SCRIPTS = sorted(STATIC.glob("*.js"))

# What would turn text into markup or code.
SINKS = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|"
                   r"new Function|setAttribute\(\s*[\"'](style|on\w+|href|src)[\"']|"
                   r"\.src\s*=(?!\s*drawingUrl;)")


def test_every_file_of_the_page_is_in_the_package():
    import tomllib  # Python 3.11 on (the tests' Python); the package itself needs 3.10

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = data["package-data"]["jitnet.service.web"]
    files = [p.relative_to(STATIC.parent).as_posix() for p in STATIC.rglob("*") if p.is_file()]
    assert files and all(any(fnmatch.fnmatch(f, pattern) for pattern in patterns)
                         for f in files), files
    assert "jitnet.service.web" in data["packages"]


def test_scripts_set_text_only():
    assert len(SCRIPTS) >= 5
    for script in SCRIPTS:
        for number, line in enumerate(script.read_text().splitlines(), 1):
            assert not SINKS.search(line), f"{script.name}:{number}: {line.strip()}"


def test_the_sink_check_catches_a_sink():
    assert SINKS.search('box.innerHTML = message;')
    assert SINKS.search('el.setAttribute("onclick", text)')
    assert not SINKS.search("box.textContent = message;")


def test_the_page_has_no_inline_script_style_or_outside_address():
    page = (STATIC / "index.html").read_text()
    scripts = re.findall(r"<script\b[^>]*>", page)
    assert scripts == ['<script type="module" src="/main.js">']
    assert not re.search(r"\sstyle=|\son[a-z]+=|<style", page)
    for path in STATIC.iterdir():
        text = path.read_text()
        outside = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not outside, (path.name, outside)


def test_modules_import_only_the_page_s_own_modules():
    names = {p.name for p in SCRIPTS}
    for script in SCRIPTS:
        for target in re.findall(r'from\s+"\./([^"]+)"', script.read_text()):
            assert target in names, (script.name, target)
