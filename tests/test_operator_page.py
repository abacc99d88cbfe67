"""The operator's page in a real headless browser (Debian's chromium, installed by
tools/setup-system): the daemon runs on the simulator, Chromium loads its page, and the test
reads the DOM the browser built and saves a screenshot."""

import html.parser
import re
import shutil
import subprocess
import time
import urllib.request

import pytest

from edge.line.daemon import Daemon
from tests.test_daemon import config, install


class Page(html.parser.HTMLParser):
    """Text and attributes by element id, from the DOM Chromium dumps."""

    def __init__(self, dom: str):
        super().__init__()
        self.text, self.attrs, self.open = {}, {}, []
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("img", "meta", "br", "input", "link"):
            if "id" in attrs:
                self.attrs[attrs["id"]] = attrs
            return
        self.open.append(attrs.get("id"))
        if attrs.get("id"):
            self.attrs[attrs["id"]] = attrs
            self.text.setdefault(attrs["id"], "")

    def handle_endtag(self, tag):
        if tag not in ("img", "meta", "br", "input", "link") and self.open:
            self.open.pop()

    def handle_data(self, data):
        for ident in self.open:
            if ident:
                self.text[ident] += data


def chromium(*args, timeout=60) -> str:
    exe = shutil.which("chromium")
    assert exe, "chromium is missing: tools/setup-system installs it"
    out = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.fixture()
def line(station, tmp_path):
    """A daemon that has sorted a few boxes on the simulator with an untrained model (so most
    are rejected for low confidence) and keeps its page up."""
    install(station, 1_790_000_000)
    cfg = config(
        station["store"],
        source={"url": "sim:?boxes=8&seed=2&size=64&speed=6"},
        decide={"min_confidence": 0.9},
        status={"station": "line 3 <east>", "reject_alarm": 0.25},
    )
    daemon = Daemon(cfg)
    daemon.start_services()
    daemon.state = "running"  # as run() says; the frames are stepped here, the page stays up
    while (frame := daemon._read_frame()) is not None:
        daemon.step(frame)
    yield daemon, "http://127.0.0.1:%d/" % daemon.servers[0].port
    daemon.shutdown()


def test_the_operator_page_shows_the_line_in_a_real_browser(line, tmp_path):
    daemon, url = line
    status = daemon.status()
    assert status["boxes"] == 8 and status["rejects"] > 2  # past the 25% alarm
    profile = ["--user-data-dir=%s" % (tmp_path / "profile")]
    page = Page(chromium(*profile, "--virtual-time-budget=1500", "--dump-dom", url))
    assert page.text["station"] == "line 3 <east>"  # escaped by the page, shown as written
    assert page.text["state"].endswith("running")
    assert "line-3 version 1790000000 (2026-09-21 14:13 UTC)" in page.text["model"]
    rejects = page.attrs["rejects"]
    assert rejects.get("class") == "alarm" and "alarm above 25%" in page.text["rejects"]
    # every lane, also one no box went to: "<th>lane</th><td>count</td>"
    lanes = {
        k[5:]: int(re.search(r"\d+$", v).group())
        for k, v in page.text.items()
        if k.startswith("lane-")
    }
    assert lanes == status["lanes"] and set(lanes) == {"left", "right", "reject"}
    assert sum(lanes.values()) == 8
    assert page.text["rate"].endswith("8")  # boxes a minute: all 8 within the last minute
    assert page.text["timing"].endswith("the photo-eye")  # the line has one
    assert page.text["uptime"].split()[1] in ("s", "min")  # readable, not raw seconds
    shown = int(page.attrs["frame"].get("data-shown", 0))  # set once /frame.png has loaded
    assert shown == 3 * daemon.model.input_shape[1]  # the model's input, scaled 3x
    assert page.text["frame-label"].split()[0] in daemon.model.labels
    decided = page.text["decisions"]
    assert all(d["label"] in decided for d in status["last_decisions"])
    assert "swapped in" not in page.text["events"] or "line-3" in page.text["events"]
    shot = tmp_path / "operator-page.png"  # kept with the test run for a person to look at
    chromium(*profile, "--window-size=900,1400", "--screenshot=%s" % shot, url)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one


def test_the_json_endpoint_stays_the_machine_interface(line):
    import json

    daemon, url = line
    got = json.loads(urllib.request.urlopen(url + "status.json", timeout=5).read())
    assert got["station"] == "line 3 <east>" and got["boxes"] == 8
    assert set(got["lanes"]) == {"left", "right", "reject"} and got["alarm"] is True
    assert got["boxes_per_minute"] == 8 and got["actuator"]["late"] == 0
    assert got["timing"] == {"from": "eye", "by_image": 0, "by_model": 0, "held": 0}
    png = urllib.request.urlopen(url + "frame.png", timeout=5).read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert time.time() - got["last_decisions"][-1]["at"] < 60


def test_the_live_view_is_encoded_at_most_twice_a_second_however_often_it_is_asked(line):
    """A phone refreshing the page, or a peer asking for /frame.png in a loop, must not take
    the frame loop's CPU: the PNG is encoded at most every FRAME_PNG_S."""
    import edge.line.status as status_module

    daemon, url = line
    calls = []
    real = status_module.png
    status_module.png = lambda grey: calls.append(1) or real(grey)
    try:
        bodies = {urllib.request.urlopen(url + "frame.png", timeout=5).read() for _ in range(30)}
    finally:
        status_module.png = real
    assert len(calls) <= 2 and len(bodies) <= 2


def test_the_status_is_computed_at_most_four_times_a_second_however_often_it_is_asked(line):
    """The same for /status.json and the page: 40 requests in a row, one computation per
    STATUS_CACHE_S."""
    daemon, _ = line
    calls = []
    real = daemon.status
    daemon.status = lambda: calls.append(1) or real()
    from edge.line.status import StatusServer

    server = StatusServer("127.0.0.1:0", daemon.status)
    try:
        t = time.monotonic()
        for _ in range(40):
            urllib.request.urlopen("http://127.0.0.1:%d/status.json" % server.port, timeout=5)
        elapsed = time.monotonic() - t
    finally:
        server.close()
    assert len(calls) <= 1 + elapsed / 0.25
