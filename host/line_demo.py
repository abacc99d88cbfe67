"""The demo's last act: the model on a (simulated) line, shipped and upgraded while it runs.

A signing key and a device store are made under OUT/line; an edge daemon starts on the conveyor
simulator with its TCP receiver and waits for a model (actuator safe). The packed `.bnn` is
shipped to it as version 1; the daemon swaps it in and sorts. When a third of the boxes are
decided, the same network is shipped again as version 2 and swapped in between two frames
while the belt runs. Box boundaries come from the model's `empty` class, as on a line without
a photo-eye. The simulator knows every box, so the report counts missed and double decisions,
and its belt is physical (BELT_MPS, diverters at DIVERTERS metres past the camera), so the
report also says whether each lane's diverter was on the box when the box passed it
(`sorted_right`, edge.line.sources.conveyor.score_sorting).
"""

import os
import threading
import time

from edge.install.store import SlotStore
from edge.line.config import check_config
from edge.line.daemon import Daemon
from edge.line.sources.conveyor import score_decisions, score_sorting
from host.ship import ship
from protocol.signing import new_key_pair

LANES = {"F06": "left", "K11": "left", "S19": "right", "V22": "right"}
BELT_MPS = 0.5  # the simulator's belt, and the daemon's config
DIVERTERS = {"left": 0.4, "right": 0.6, "reject": 0.8}  # metres past the camera's centre line


def line_config(
    store: str, boxes: int, seed: int, lanes: dict, belt_mps: float, latency_ms, timing="image"
):
    url = "sim:?boxes=%d&seed=%d&belt=%s&latency=%s" % (boxes, seed, belt_mps, latency_ms)
    return check_config(
        {
            "model": {"store": store, "trial_boxes": 20, "trial_seconds": 1.0},
            "source": {"url": url},
            "decide": {"min_confidence": 0.5, "timing": timing},
            "lanes": {"reject": "reject", "map": lanes},
            "actuator": {
                "kind": "log",
                "belt_speed_mps": belt_mps,
                "distance_m": dict(DIVERTERS),
                "pulse_ms": 150,
            },
            "receiver": {"listen": "tcp://127.0.0.1:0"},
            "status": {"listen": "127.0.0.1:0", "save_every_s": 5.0},
        }
    )


def run_line(
    model_path: str,
    out_dir: str,
    labels: list,
    boxes: int = 300,
    seed: int = 1,
    belt_mps: float = BELT_MPS,
    latency_ms: float = 0,
    timing: str = "image",
):
    root = os.path.join(out_dir, "line")
    keys = os.path.join(root, "keys")
    store_dir = os.path.join(root, "store")
    if os.path.exists(os.path.join(keys, "signing.key")):
        import shutil

        shutil.rmtree(root)
    key_path, pub_path = new_key_pair(keys)
    SlotStore.init(store_dir, [pub_path])
    lanes = {k: v for k, v in LANES.items() if k in labels}
    cfg = line_config(store_dir, boxes, seed, lanes, belt_mps, latency_ms, timing)
    daemon = Daemon(cfg, record_truth=True)
    daemon.start_services()
    url = "tcp://127.0.0.1:%d" % daemon.receiver_port
    shipped = {}

    def ship_both():
        t = time.monotonic()
        ship(model_path, url, key_path, {"version": 1, "model_id": "demo", "reconnects": 3})
        shipped["transfer_seconds"] = round(time.monotonic() - t, 3)
        while len(daemon.decisions) < boxes // 3 and not daemon.stop_event.is_set():
            time.sleep(0.02)
        t = time.monotonic()
        ship(model_path, url, key_path, {"version": 2, "model_id": "demo", "reconnects": 3})
        shipped["second_transfer_seconds"] = round(time.monotonic() - t, 3)
        shipped["second_at_box"] = len(daemon.decisions)

    shipper = threading.Thread(target=ship_both, daemon=True)
    shipper.start()
    daemon.run()
    shipper.join(timeout=30)
    decisions = list(daemon.decisions)
    score = score_decisions(decisions, daemon.truths, daemon.swaps[1:])
    sim = daemon.source
    plan = list(daemon.actuator.plan)
    sorting = score_sorting(sim, decisions, daemon.truths, plan, lanes, "reject", DIVERTERS)
    per_lane = {}
    for d in decisions:
        true_lane = lanes.get(d["true_label"], "reject")
        lane = per_lane.setdefault(true_lane, {"boxes": 0, "correct": 0})
        lane["boxes"] += 1
        lane["correct"] += int(d["lane"] == true_lane)
    for lane in per_lane.values():
        lane["accuracy"] = round(lane["correct"] / lane["boxes"], 4)
    status = daemon.status()
    versions = sorted({d["model_version"] for d in decisions})
    return {
        **score,
        **sorting,
        "belt_speed_mps": belt_mps,
        "boxes_per_minute": round(60 * score["boxes"] / sim.t, 1) if sim and sim.t else None,
        "lanes": per_lane,
        "latency_ms_p50": status["latency_ms"]["p50"],
        "latency_ms_p99": status["latency_ms"]["p99"],
        "frames": status["frames"],
        "transfer_seconds": shipped.get("transfer_seconds"),
        "second_version_at_box": shipped.get("second_at_box"),
        "versions_used": versions,
        "swaps": len(daemon.swaps),
        "timed_by_image": daemon.tracker.image_timed,
        "timed_by_model": daemon.tracker.model_timed,
        "held_for_image": daemon.tracker.held_count,
        "store": store_dir,
    }
