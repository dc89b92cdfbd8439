"""Open a page in a real headless Chromium (Debian's ``chromium``) and report what it
rendered: how many images loaded, which did not, the h2 headings and the text.

The page is served over HTTP on loopback next to a small probe page that loads it
in a same-origin iframe and writes what it finds into its own DOM, which Chromium's
``--dump-dom`` prints once the page has loaded.
"""

from __future__ import annotations

import functools
import html
import http.server
import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

PROBE = """<!doctype html><meta charset=utf-8><body>
<iframe id=f src="{page}" style="width:1200px;height:900px"></iframe>
<script>
document.getElementById('f').addEventListener('load', () => {{
  const doc = document.getElementById('f').contentDocument;
  const imgs = Array.from(doc.images);
  const out = {{
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    h2: Array.from(doc.querySelectorAll('h2')).map(h => h.textContent),
    text: doc.body.innerText,
  }};
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium here (.ci/run installs Debian's chromium package)")


def images_in_page(page: Path) -> dict:
    exe = chromium()
    page = Path(page)
    probe = page.with_name("_probe.html")
    probe.write_text(PROBE.format(page=page.name))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(page.parent))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{probe.name}"
        run = subprocess.run(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--virtual-time-budget=15000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.shutdown()
        probe.unlink()
    match = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.S)
    assert match, f"the probe found nothing; chromium said: {run.stderr[-2000:]}"
    return json.loads(html.unescape(match.group(1)))
