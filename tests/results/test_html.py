"""The HTML report: self-contained, and rendered the way a user sees it, in headless Chromium.

Chromium runs with a recording proxy as its only way out, so any request the page makes (image, font, stylesheet) is
caught twice: by the proxy, and by the page's own resource-timing list, read back with `--dump-dom`.
"""

from __future__ import annotations

import json
import re
import shutil
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from mmx.results.html import render_html
from mmx.results.report import Report

K = 1024
CHROMIUM = next(
    (path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install chromium; .ci/run installs it)"
)
# Appended to a copy of the report under test only: on load, write what the page fetched and how its images decoded
# into an attribute that --dump-dom prints. The report itself carries no script.
PROBE = """<script>window.addEventListener("load", () => document.body.setAttribute("data-probe", JSON.stringify({
  images: [...document.images].map(i => ({complete: i.complete, width: i.naturalWidth, alt: i.alt})),
  resources: performance.getEntriesByType("resource").map(e => e.name)})));</script>"""


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory, synth: ModuleType) -> tuple[Report, str]:
    """Every section at once: two RULER runs (one in progress, one with random weights), NIAH, bench, lm-eval."""
    root = tmp_path_factory.mktemp("runs")
    lengths = [4 * K, 8 * K, 16 * K, 32 * K]
    runs = [
        synth.write_eval_run(root / "mini", lengths=lengths, samples=2, strength=0.5),
        synth.write_eval_run(
            root / "partial", name="other", lengths=lengths, samples=2, keep=lambda t, n, i: n < 32 * K or t < "n"
        ),
        synth.write_eval_run(root / "rand", name="tiny", lengths=lengths[:2], samples=1, random_weights=True),
        synth.write_niah_run(root / "niah", [4 * K * 2**i for i in range(6)], [0.0, 25.0, 50.0, 75.0, 100.0]),
        synth.write_bench_run(root / "bench", [4 * K * 2**i for i in range(8)], oom_from=512 * K),
        synth.write_lm_eval_run(root / "lm", {"arc_easy": {"acc,none": 0.41, "acc_stderr,none": 0.02}}),
    ]
    report = Report.build(runs, references=["minimax-text-01"])
    return report, render_html(report)


def test_html_is_one_self_contained_file(report_html: tuple[Report, str]) -> None:
    report, html = report_html
    urls = re.findall(r'\b(?:src|href)="([^"]*)"', html) + re.findall(r"url\(([^)]*)\)", html)
    assert urls, "the report should have images and in-page links"
    assert all(u.startswith(("data:", "#")) for u in urls), [u[:60] for u in urls if not u.startswith(("data:", "#"))]
    assert "<script>" not in html and "<script " not in html.replace('<script type="application/json"', "")
    assert len(html) < 900_000  # a few hundred KB for six runs
    data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)[1])
    assert data == json.loads(json.dumps(report.to_dict()))
    mini = next(r for r in data["runs"] if r["label"] == "mmx-mini [mini]")
    assert mini["summary"]["avg"] == pytest.approx(report.analyses[0].summary.avg)
    for text in ("random weights", "published; not comparable", "incomplete", "Needle in a haystack", "lm-eval"):
        assert text in html


# Chromium's own service traffic (clock sync, component updates, sign-in), sent whatever the page holds and not
# fully silenced by any flag; the proxy refuses it like everything else, and it is not counted against the page.
BROWSER_SERVICES = {"clients2.google.com", "update.googleapis.com", "accounts.google.com"}


def request_host(line: str) -> str:
    """The host of a proxy request line: `GET http://host/path HTTP/1.1` or `CONNECT host:443 HTTP/1.1`."""
    target = line.split()[1] if len(line.split()) > 1 else ""
    return target.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]


class RecordingProxy(socketserver.ThreadingTCPServer):
    """An HTTP proxy that refuses everything and remembers each request line it was sent."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.requests: list[str] = []
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(8192).decode("latin-1").strip()
                if line:
                    proxy.requests.append(line)
                self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def page_requests(self) -> list[str]:
        """Requests other than the browser's own service traffic: what the page under test asked for."""
        return [line for line in self.requests if request_host(line) not in BROWSER_SERVICES]


@pytest.fixture
def proxy() -> Iterator[RecordingProxy]:
    server = RecordingProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def chromium(page: Path, proxy: RecordingProxy, *args: str) -> str:
    """Run headless Chromium on a local file with the proxy as its only route out; returns stdout."""
    port = proxy.server_address[1]
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--no-pings",
        f"--user-data-dir={page.parent / 'profile'}",
        f"--proxy-server=http://127.0.0.1:{port}",
        "--proxy-bypass-list=<-loopback>",
        *args,
        page.as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def probe(html: str, tmp_path: Path, proxy: RecordingProxy) -> dict:
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = chromium(page, proxy, "--dump-dom", "--virtual-time-budget=5000")
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, "the load handler did not run"
    return json.loads(found[1].replace("&quot;", '"').replace("&amp;", "&"))


@needs_chromium
def test_report_renders_every_image_without_network(
    report_html: tuple[Report, str], tmp_path: Path, proxy: RecordingProxy
) -> None:
    _, html = report_html
    result = probe(html, tmp_path, proxy)
    assert len(result["images"]) == html.count('<img src="data:image/svg+xml;base64,') >= 6
    broken = [i["alt"] for i in result["images"] if not (i["complete"] and i["width"] > 0)]
    assert not broken, f"images that did not load: {broken}"
    assert result["resources"] == [] and proxy.page_requests == []


@needs_chromium
def test_probe_catches_a_network_request(tmp_path: Path, proxy: RecordingProxy) -> None:
    """The check above can fail: a page with one remote image is caught by the proxy and by resource timing."""
    html = '<html><body><img src="http://example.invalid/chart.png" alt="remote"></body></html>'
    result = probe(html, tmp_path, proxy)
    assert result["images"] == [{"complete": True, "width": 0, "alt": "remote"}]
    assert result["resources"] == ["http://example.invalid/chart.png"]
    assert "example.invalid" in {request_host(line) for line in proxy.page_requests}


@needs_chromium
def test_report_screenshot(report_html: tuple[Report, str], tmp_path: Path, proxy: RecordingProxy) -> None:
    """A full-width screenshot is taken and is a real picture: wide, tall, and far from one flat colour."""
    _, html = report_html
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    shot = tmp_path / "report.png"
    chromium(page, proxy, "--window-size=1280,2400", f"--screenshot={shot}")
    with Image.open(shot) as image:
        assert image.size == (1280, 2400)
        colours = image.convert("RGB").resize((320, 600)).getcolors(maxcolors=1_000_000)
    assert len(colours) > 500  # tables, heat colours and charts, not a blank or error page
    assert proxy.page_requests == []
