"""Fleet shipping against real daemons: eight `binsort-edge run` processes on 127.0.0.1 ports,
one behind tools/link-proxy dropping 5% of frames, one whose store does not trust the key.
`binsort ship --fleet` with a canary, `binsort fleet status`, `logs` and a signed rollback to
the other slot with no file; and the inventory reader (INI and YAML) on its own."""

import json
import os
import subprocess
import urllib.request

import pytest

from edge.install.store import SlotStore
from host.fleet import judge, read_history
from host.inventory import expand, read_inventory
from protocol.errors import BinsortError
from tests.conftest import free_port
from tests.shipkit import EDGE, HOST, ROOT, Proxy, keys, wait_for

LANES = '{ F06 = "left", K11 = "left", S19 = "right", V22 = "right" }'
GOOD, LOSSY, DISTRUSTFUL = "pi-%d", "pi-lossy", "pi-distrustful"


def _ports(proc) -> dict:
    """{"status": port, "receiving": port} from a starting daemon's first lines (its output
    is then drained in a thread, so a full pipe never stops it)."""
    import threading

    ports, seen = {}, []
    for line in proc.stdout:
        seen.append(line)
        for what in ("status", "receiving"):
            if line.startswith(what) and " on port " in line:
                ports[what] = int(line.split(" on port ")[1].split()[0])
        if len(ports) == 2:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return ports
    raise AssertionError("the daemon ended: %s" % "".join(seen)[-2000:])


def _config(path, store, station):
    path.write_text(
        "[model]\nstore = %s\ntrial_boxes = 2\ntrial_seconds = 0.5\n"
        '[source]\nurl = "sim:?size=64&speed=6&fps=10"\n'
        '[lanes]\nreject = "reject"\nmap = %s\n'
        '[actuator]\nkind = "log"\n'
        '[receiver]\nlisten = "tcp://127.0.0.1:0"\n'
        '[status]\nlisten = "127.0.0.1:0"\nstation = "%s"\nsave_every_s = 1\n'
        % (json.dumps(store), LANES, station)
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, tiny_model, bcnn_model):
    """Eight daemons with no model yet and an inventory naming them (group `line`, with the
    canary in group `first`); the lossy one ships through a proxy, the last trusts another key."""
    tmp = tmp_path_factory.mktemp("fleet")
    key, pub = keys(tmp / "key")
    _, other_pub = keys(tmp / "other")
    names = [GOOD % i for i in range(1, 7)] + [LOSSY, DISTRUSTFUL]
    procs, proxy, hosts = [], None, []
    try:
        for name in names:
            store = str(tmp / name / "store")
            SlotStore.init(store, [other_pub if name == DISTRUSTFUL else pub])
            cfg = tmp / name / "edge.toml"
            _config(cfg, store, name)  # ports 0: each daemon says which it got
            procs.append(
                subprocess.Popen(
                    EDGE + ["run", "--config", str(cfg)],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        for name, proc in zip(names, procs, strict=True):
            ports = _ports(proc)
            if name == LOSSY:
                proxy = Proxy("tcp", "--to", "127.0.0.1:%d" % ports["receiving"], "--drop", "0.05")
                ship = "tcp://" + proxy.endpoints["listen"]
            else:
                ship = "tcp://127.0.0.1:%d" % ports["receiving"]
            status = "http://127.0.0.1:%d" % ports["status"]
            hosts.append((name, ship, status, str(tmp / name / "store")))
        inventory = tmp / "inventory.ini"
        lines = ["[line]"]
        lines += ["%s binsort_url=%s binsort_status=%s" % h[:3] for h in hosts]
        inventory.write_text("\n".join(lines) + "\n")
        tiny, bcnn = tmp / "line-a.bnn", tmp / "line-b.bnn"
        tiny.write_bytes(tiny_model[1])
        bcnn.write_bytes(bcnn_model[1])
        yield {
            "key": key,
            "inventory": str(inventory),
            "hosts": {h[0]: h for h in hosts},
            "history": str(tmp / "deployments.jsonl"),
            "a": str(tiny),
            "b": str(bcnn),
            "tmp": tmp,
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=20)
        if proxy is not None:
            proxy.stop()


def binsort(fleet, *args, timeout=240):
    history = [] if args[:2] == ("fleet", "logs") else ["--history", fleet["history"]]
    return subprocess.run(
        HOST + list(args) + history,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


def test_a_staged_rollout_ships_to_the_good_devices_and_names_the_one_that_refused(fleet):
    out = binsort(
        fleet, "ship", fleet["a"], "--fleet", fleet["inventory"], "--key", fleet["key"],
        "--version", "1", "--canary", "2", "--watch", "2", "--parallel", "4", "--json",
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    report = json.loads(out.stdout)
    results = report["devices"]
    assert len(results) == 8 and report["failed"] == [DISTRUSTFUL]
    assert all(results[GOOD % i]["ok"] for i in range(1, 7)) and results[LOSSY]["ok"]
    assert "untrusted" in results[DISTRUSTFUL]["error"] or "trust" in results[DISTRUSTFUL]["error"]
    err = out.stderr.strip().splitlines()
    assert (
        err[-1]
        == "binsort: error: shipped line-a version 1: 7 installed, 1 failed (%s) of 8 devices"
        % DISTRUSTFUL
    )
    assert "canary healthy" in out.stderr
    for name, (_, _, _, store) in fleet["hosts"].items():
        active = SlotStore(store).summary()
        if name == DISTRUSTFUL:
            assert active["active"] is None
        else:
            assert active["slots"][active["active"]]["version"] == 1
    # the history keeps what a rollback needs
    entry = read_history(fleet["history"])[-1]
    assert entry["failed"] == [DISTRUSTFUL] and entry["signed"]["size"] == os.path.getsize(
        fleet["a"]
    )

    # fleet status: all eight, the daemons running version 1 (the distrustful one: no model)
    assert wait_for(lambda: _all_run(fleet, 1), timeout=30)
    status = binsort(fleet, "fleet", "status", "-i", fleet["inventory"], "--json")
    assert status.returncode == 0, status.stderr
    rows = {r["device"]: r for r in json.loads(status.stdout)["devices"]}
    assert len(rows) == 8 and all(r["reachable"] for r in rows.values())
    assert rows[DISTRUSTFUL]["state"] == "no model" and rows[LOSSY]["version"] == 1
    table = binsort(fleet, "fleet", "status", "-i", fleet["inventory"])
    assert table.stdout.count("line-a") == 7 and "8 of 8 devices answered" in table.stdout

    # a canary that fails stops the rollout: nobody else gets version 2
    first = fleet["tmp"] / "canary-first.ini"
    order = [DISTRUSTFUL] + [n for n in fleet["hosts"] if n != DISTRUSTFUL]
    first.write_text(
        "[line]\n"
        + "".join("%s binsort_url=%s binsort_status=%s\n" % fleet["hosts"][n][:3] for n in order)
    )
    stopped = binsort(
        fleet, "ship", fleet["b"], "--fleet", str(first), "--key", fleet["key"],
        "--version", "2", "--canary", "1", "--json",
    )  # fmt: skip
    assert stopped.returncode == 2
    report = json.loads(stopped.stdout)
    assert report["stopped"].startswith("canary pi-distrustful failed: 7 devices not shipped to")
    assert sum(1 for r in report["devices"].values() if r.get("skipped")) == 7
    assert "7 not started" in stopped.stderr.strip().splitlines()[-1]
    assert _all_run(fleet, 1)

    # version 2 to the good ones (the group names them), then one device rolled back to
    # version 1 from its other slot: signed, bound to its store, no file given
    good = fleet["tmp"] / "good.ini"
    good.write_text(
        "[good]\n"
        + "".join(
            "%s binsort_url=%s binsort_status=%s\n" % fleet["hosts"][n][:3]
            for n in fleet["hosts"]
            if n != DISTRUSTFUL
        )
    )
    two = binsort(fleet, "ship", fleet["b"], "--fleet", str(good), "--group", "good",
                  "--key", fleet["key"], "--version", "2")  # fmt: skip
    assert two.returncode == 0, two.stderr
    assert "shipped line-b version 2: 7 installed of 7 devices" in two.stdout
    assert wait_for(lambda: _runs(fleet, GOOD % 3) == ("line-b", 2), timeout=30)
    back = binsort(fleet, "fleet", "rollback", GOOD % 3, "-i", str(good), "--key", fleet["key"])
    assert back.returncode == 0, back.stderr
    assert "rolled back 1 of 1 devices" in back.stdout
    assert wait_for(lambda: _runs(fleet, GOOD % 3) == ("line-a", 1), timeout=30)
    store = SlotStore(fleet["hosts"][GOOD % 3][3]).summary()
    assert store["slots"][store["active"]]["rollback"] is True
    assert _runs(fleet, GOOD % 4) == ("line-b", 2)  # only the one named

    logs = binsort(fleet, "fleet", "logs", GOOD % 3, "-i", str(good), "--lines", "50")
    assert logs.returncode == 0 and "rollback to line-a v1" in logs.stdout
    history = binsort(fleet, "fleet", "history")
    assert history.returncode == 0
    assert [ln.split()[3] for ln in history.stdout.splitlines()] == [
        "ship",
        "ship",
        "ship",
        "rollback",
    ]


def _runs(fleet, name):
    status = json.loads(
        urllib.request.urlopen(fleet["hosts"][name][2] + "/status.json", timeout=5).read()
    )
    model = status.get("model") or {}
    return model.get("model_id"), model.get("version")


def _all_run(fleet, version) -> bool:
    return all(_runs(fleet, n)[1] == version for n in fleet["hosts"] if n != DISTRUSTFUL)


def test_fleet_commands_refuse_bad_input_in_one_line(fleet, tmp_path):
    bad_url = tmp_path / "bad.ini"
    bad_url.write_text("[line]\npi-1 binsort_url=ftp://x\n")
    cases = [
        (["fleet", "status", "-i", str(tmp_path / "none.ini")], "does not exist"),
        (["fleet", "status", "-i", fleet["inventory"], "--group", "nope"], "has no group 'nope'"),
        (["fleet", "status", "-i", str(bad_url)], "pi-1: binsort_url"),
        (["fleet", "logs", "pi-9", "-i", fleet["inventory"]], "has no host 'pi-9'"),
        (["fleet", "rollback", "-i", fleet["inventory"], "--key", fleet["key"]], "one device"),
        (
            [
                "ship",
                fleet["a"],
                "--fleet",
                fleet["inventory"],
                "--key",
                fleet["key"],
                "--canary",
                "8",
            ],
            "leaves no device",
        ),  # fmt: skip
        (
            [
                "ship",
                fleet["a"],
                "--to",
                "tcp://127.0.0.1:9",
                "--key",
                fleet["key"],
                "--canary",
                "1",
            ],
            "are for --fleet",
        ),  # fmt: skip
    ]
    for args, message in cases:
        out = binsort(fleet, *args, timeout=60)
        assert out.returncode == 2, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, out.stderr)


def test_ini_and_yaml_inventories_read_alike(tmp_path):
    ini = tmp_path / "hosts.ini"
    ini.write_text(
        "# stations\n"
        "solo ansible_host=10.0.0.9\n"
        "[east]\n"
        "pi-[01:03] ansible_host=10.0.1.1\n"
        "[west]\n"
        "pi-[a:b] binsort_url=tcp://10.0.2.1:9000 binsort_status='http://10.0.2.1:81'\n"
        "[line:children]\neast\nwest\n"
        "[line:vars]\nbinsort_url=tcp://shared:7600\n"
        "[all:vars]\nansible_user=pi\n"
    )
    yml = tmp_path / "hosts.yml"
    yml.write_text(
        "all:\n"
        "  vars: {ansible_user: pi}\n"
        "  hosts:\n    solo: {ansible_host: 10.0.0.9}\n"
        "  children:\n"
        "    line:\n"
        "      vars: {binsort_url: 'tcp://shared:7600'}\n"
        "      children:\n"
        "        east:\n          hosts:\n            pi-[01:03]: {ansible_host: 10.0.1.1}\n"
        "        west:\n"
        "          hosts:\n"
        "            pi-[a:b]:\n"
        "              binsort_url: tcp://10.0.2.1:9000\n"
        "              binsort_status: http://10.0.2.1:81\n"
    )
    for path in (ini, yml):
        inv = read_inventory(str(path))
        line = inv.devices("line")
        assert [d.name for d in line] == ["pi-01", "pi-02", "pi-03", "pi-a", "pi-b"]
        # the group's url wins over the default; the host's own over the group's
        assert line[0].url == "tcp://shared:7600" and line[0].status == "http://10.0.1.1:8080"
        assert line[3].url == "tcp://10.0.2.1:9000" and line[3].status == "http://10.0.2.1:81"
        solo = inv.device("solo")
        assert solo.url == "tcp://10.0.0.9:7600" and solo.vars["ansible_user"] == "pi"
        assert len(inv.devices()) == 6


def test_inventory_mistakes_name_the_file_and_line(tmp_path):
    cases = {
        "[line\npi-1\n": "line 1: a section is",
        "[line:what]\n": "unknown section kind",
        "[line]\npi-1 port\n": "line 2: host variables are NAME=VALUE",
        "[line]\npi-[3:1]\n": "is empty",
        "# nothing\n": "lists no hosts",
        "BSNN\x01\x00\x03META\n": "is not a host name",  # a model given as the inventory
    }
    for text, message in cases.items():
        path = tmp_path / "inv.ini"
        path.write_text(text)
        with pytest.raises(BinsortError, match=message.replace("[", r"\[")):
            read_inventory(str(path))
    bad = tmp_path / "inv.yml"
    bad.write_text("all:\n  hosts: [a, b]\n")
    with pytest.raises(BinsortError, match="hosts must be a mapping"):
        read_inventory(str(bad))
    assert expand("pi-[08:10]", "x") == ["pi-08", "pi-09", "pi-10"]


def test_a_canary_is_judged_on_what_it_did_during_the_watch():
    signed = {"model_id": "m", "version": 5}
    base = {"model": {"model_id": "m", "version": 5}, "boxes": 100, "rejects": 10}
    ok = dict(base, boxes=150, rejects=14, reject_alarm=0.2, state="running")
    assert judge(ok, base, signed, None) is None
    bad = dict(ok, rejects=30)  # 20 of the 50 boxes in the watch: 40%
    assert "rejected 20 of 50 boxes" in judge(bad, base, signed, None)
    assert judge(bad, base, signed, 0.5) is None  # a limit given on the command line wins
    few = dict(base, boxes=110, rejects=20, reject_alarm=0.2)  # 10 boxes: too few to judge
    assert judge(few, base, signed, None) is None
    rolled = dict(
        ok,
        model={"model_id": "m", "version": 4},
        events=[{"event": "rollback from slot b to a: trial failed"}],
    )
    assert "runs m v4, not the shipped model (rollback from slot b" in judge(
        rolled, base, signed, None
    )
    assert judge(rolled, None, signed, None) is None  # not yet seen running it: wait
    assert "fault" in judge(dict(ok, fault="camera gone"), base, signed, None)


def static_status(document):
    """An HTTP server on 127.0.0.1 answering every GET with `document` as JSON (a device
    whose daemon is wedged, or one that answers what it likes); .shutdown() when done."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = document if isinstance(document, bytes) else json.dumps(document).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_canary_that_never_starts_the_model_stops_the_rollout(tmp_path, tiny_model):
    """A device whose receiver installs the model but whose daemon keeps the old one (wedged):
    after the watch the rollout stops, and the second device is never shipped to."""
    from tests.shipkit import Receiver

    key, pub = keys(tmp_path / "k")
    stores = [str(tmp_path / n) for n in ("s1", "s2")]
    for s in stores:
        SlotStore.init(s, [pub])
    old = {"model": {"model_id": "old", "version": 3}, "boxes": 5, "rejects": 0, "state": "ok"}
    server = static_status(old)
    rxs = [Receiver(s) for s in stores]
    try:
        inv = tmp_path / "inv.yml"
        inv.write_text(
            "all:\n  hosts:\n"
            + "".join(
                "    d%d: {binsort_url: '%s', binsort_status: 'http://127.0.0.1:%d'}\n"
                % (i, rx.url, server.server_address[1])
                for i, rx in enumerate(rxs)
            )
        )
        model = tmp_path / "m.bnn"
        model.write_bytes(tiny_model[1])
        out = subprocess.run(
            HOST + ["ship", str(model), "--fleet", str(inv), "--key", key, "--canary", "1"]
            + ["--watch", "1", "--version", "4", "--history", str(tmp_path / "h.jsonl")],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
    finally:
        for rx in rxs:
            rx.stop()
        server.shutdown()
    assert out.returncode == 2
    assert "d0: canary: it did not start the shipped model within the watch (it runs old v3)" in (
        out.stderr
    )
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .endswith("stopped: canary d0 failed: 1 device not shipped to")
    )
    assert SlotStore(stores[0]).summary()["active"] == "a"  # the canary got it
    assert SlotStore(stores[1]).summary()["active"] is None  # the rest did not


def babbler():
    """A TCP server on 127.0.0.1 that answers every connection with a line that is not HTTP
    (an sshd on the status port, say); .close() when done."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

    threading.Thread(target=serve, daemon=True).start()
    return server


def test_fleet_status_shows_a_device_that_does_not_answer_or_answers_nonsense(tmp_path):
    odd = static_status({"model": ["not", "a", "model"], "boxes": "many"})
    deep = static_status(b"[" * 5000 + b"]" * 5000)  # past the JSON parser's recursion limit
    ssh = babbler()
    try:
        inv = tmp_path / "inv.ini"
        inv.write_text(
            "gone binsort_status=http://127.0.0.1:%d\nodd binsort_status=http://127.0.0.1:%d\n"
            "deep binsort_status=http://127.0.0.1:%d\nctl binsort_status='http://a\x07b:1'\n"
            "ssh binsort_status=http://127.0.0.1:%d\n"
            % (free_port(), odd.server_address[1], deep.server_address[1], ssh.getsockname()[1])
        )
        out = subprocess.run(
            HOST + ["fleet", "status", "-i", str(inv)], capture_output=True, text=True, cwd=ROOT
        )
    finally:
        odd.shutdown()
        deep.shutdown()
        ssh.close()
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert "\ngone    unreachable " in out.stdout and "0 of 5 devices answered" in out.stdout
    assert "\nodd     odd answer   " in out.stdout
    assert "is not a binsort status (model)" in out.stdout
    assert "/status.json did not answer with JSON" in out.stdout  # the deep one
    assert "is not a status URL" in out.stdout  # a control character in the URL
    assert "did not answer in HTTP" in out.stdout  # the sshd


def test_on_a_terminal_each_device_keeps_one_line_redrawn_in_place():
    import io

    from host.fleet import Lines
    from host.inventory import Device

    devices = [Device("pi-1", {}), Device("pi-22", {})]
    screen = io.StringIO()
    lines = Lines(devices, quiet=False, out=screen, tty=True)
    lines.start(devices)
    lines.progress(devices[0], 512, 1024)
    lines.say(devices[1], "FAILED: refused")
    lines.note("a note goes above the block")
    lines.finish()
    text = screen.getvalue()
    assert "\x1b[2A" in text  # back up over the two lines to redraw them
    last = text.rsplit("a note goes above the block\n", 1)[1]
    assert last.split("\n")[:2] == [
        "\x1b[2Kpi-1   [##########..........]  50%     1.0 KiB  waiting",
        "\x1b[2Kpi-22  FAILED: refused",
    ]
    log = io.StringIO()
    plain = Lines(devices, quiet=False, out=log, tty=False)
    plain.start(devices)
    plain.progress(devices[0], 512, 1024)
    plain.say(devices[1], "FAILED: refused")
    plain.finish()
    assert log.getvalue() == "pi-22  FAILED: refused\n"  # a log gets events, never redraws


def test_a_single_ship_is_in_the_history_too(tmp_path, tiny_model):
    from tests.shipkit import Receiver

    key, pub = keys(tmp_path / "k")
    store = str(tmp_path / "store")
    SlotStore.init(store, [pub])
    model = tmp_path / "m.bnn"
    model.write_bytes(tiny_model[1])
    history = str(tmp_path / "h.jsonl")
    rx = Receiver(store)
    try:
        out = subprocess.run(
            HOST + ["ship", str(model), "--to", rx.url, "--key", key, "--version", "9",
                    "--quiet", "--history", history],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
    finally:
        rx.stop()
    assert out.returncode == 0, out.stderr
    (entry,) = read_history(history)
    assert entry["action"] == "ship" and entry["version"] == 9
    assert entry["devices"] == {rx.url: {"ok": True, "slot": "a"}}
    assert entry["signed"]["sha256"] == SlotStore(store).summary()["slots"]["a"]["sha256"]
    with open(history, "a") as f:
        f.write('{"torn": ')  # a write a crash cut short is skipped, never fatal
    assert len(read_history(history)) == 1
