#!/usr/bin/env python3
"""The README's single server vs cluster table: the same workload on each topology.

Each row is a scenario written here in full (the workload of `cluster-failover`, or of
`group-2000`; with a queue, the queue's own packets count too), run over a band of seeds with the release binary; the figures come from the runs'
JSON: packets per delivery (every packet sent, gateway and shard hops included, over deliveries),
storage writes per committed message, and the median over runs of each run's send->display p50
and p99. Prints the Markdown table; the README pastes it under "Cost against the single server".

Usage: python3 scripts/cluster-table.py [--seeds N] [--big-seeds N] [--only TEXT]
(`--only queue` runs only the rows whose topology names the queue, to refresh them.)
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMSIM = ROOT / "target" / "release" / "imsim"

WORKLOAD = """
[workload]
duration_ms = 40_000
messages = 120
burst_max = 3
offline_periods_per_device = 1
offline_ms_max = 5_000

[protocol]
heartbeat_interval_ms = 2_000
heartbeat_probe_ms = 1_000
server_silence_timeout_ms = 5_000
session_timeout_ms = 6_000
"""

DEVICE_FAULTS = '"loss", "duplication", "delay", "hold", "partition", "device-restart"'

BIG_WORKLOAD = """
[workload]
duration_ms = 40_000
messages = 150
burst_max = 3
online_fraction = 0.5

[protocol]
ack_batch_max = 20
notify_merge_ms = 500
"""


def scenario(name, topology, faults, workload=WORKLOAD, big=False):
    people = (
        "users = 2_000\nconversations = 0\n"
        if big
        else "users = 6\ndevices_per_user = 2\nconversations = 8\n"
    )
    groups = "\n[[topology.groups]]\nsize = 2_000\n" if big else ""
    return f'name = "{name}"\n\n[topology]\n{people}{topology}{groups}\n{workload}\n{faults}\n'


def swarm(classes):
    return f"[faults]\nswarm = true\nswarm_classes = [{classes}]\n"


NO_FAULTS = "[faults]\nswarm = false\n"
GATEWAYS = "gateways = 3\n"
SHARDED = "gateways = 3\nlogic = 3\n"
QUEUE = "queue = true\n"
QUEUE_FAULTS = ', "queue-loss", "queue-duplication", "queue-delay", "consumer-crash"'

ROWS = [
    ("single server", "none", scenario("t-single", "", NO_FAULTS)),
    ("3 gateways + logic", "none", scenario("t-gw", GATEWAYS, NO_FAULTS)),
    ("3 gateways + 3 logic", "none", scenario("t-sharded", SHARDED, NO_FAULTS)),
    ("single server", "device faults", scenario("t-single-f", "", swarm(DEVICE_FAULTS))),
    ("3 gateways + logic", "device faults", scenario("t-gw-f", GATEWAYS, swarm(DEVICE_FAULTS))),
    (
        "3 gateways + 3 logic",
        "device faults",
        scenario("t-sharded-f", SHARDED, swarm(DEVICE_FAULTS)),
    ),
    (
        "3 gateways + logic",
        "device + gateway faults",
        scenario(
            "t-gw-gf",
            GATEWAYS,
            swarm(DEVICE_FAULTS + ', "gateway-crash", "gateway-partition"'),
        ),
    ),
    (
        "3 gateways + 3 logic",
        "device + gateway + logic-node faults",
        scenario(
            "t-sharded-lf",
            SHARDED,
            swarm(DEVICE_FAULTS + ', "gateway-crash", "gateway-partition", "logic-crash"'),
        ),
    ),
    ("logic + queue + consumer", "none", scenario("t-queue", QUEUE, NO_FAULTS)),
    ("3 gateways + logic + queue", "none", scenario("t-gw-q", GATEWAYS + QUEUE, NO_FAULTS)),
    (
        "3 gateways + logic + queue",
        "device + gateway + queue faults (consumer crashes)",
        scenario(
            "t-gw-qf",
            GATEWAYS + QUEUE,
            swarm(DEVICE_FAULTS + ', "gateway-crash", "gateway-partition"' + QUEUE_FAULTS),
        ),
    ),
]

BIG_ROWS = [
    ("single server, 2,000-member group", "none", scenario("t-big", "", NO_FAULTS, BIG_WORKLOAD, True)),
    (
        "4 gateways + logic, 2,000-member group",
        "none",
        scenario("t-big-gw", "gateways = 4\n", NO_FAULTS, BIG_WORKLOAD, True),
    ),
    (
        "4 gateways + 3 logic, 2,000-member group",
        "none",
        scenario("t-big-sharded", "gateways = 4\nlogic = 3\n", NO_FAULTS, BIG_WORKLOAD, True),
    ),
]


def run(text, seeds, folder):
    path = Path(folder) / "row.toml"
    path.write_text(text)
    result = subprocess.run(
        [str(IMSIM), "run", str(path), "--seeds", f"0..{seeds}", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode not in (0, 1):
        sys.exit(f"imsim run failed ({result.returncode}) on:\n{text}\n{result.stderr}")
    runs = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    if len(runs) != seeds:
        sys.exit(f"expected {seeds} runs, got {len(runs)}:\n{result.stderr}")
    return runs


def figures(runs):
    stats = [r["stats"] for r in runs]
    packets = sum(s["packets"]["sent"] for s in stats)
    delivered = sum(s["delivered"] for s in stats)
    writes = sum(s["storage_writes"] for s in stats)
    committed = sum(s["committed"] for s in stats)
    p50 = statistics.median(s["latency_ms"]["p50"] for s in stats)
    p99 = statistics.median(s["latency_ms"]["p99"] for s in stats)
    passed = sum(1 for r in runs if r["ok"])
    return packets / max(delivered, 1), writes / max(committed, 1), p50, p99, passed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--big-seeds", type=int, default=5)
    parser.add_argument("--only", default="", help="run only rows whose topology contains this")
    args = parser.parse_args()
    if not IMSIM.exists():
        sys.exit(f"{IMSIM} is missing: run `cargo build --release` first")
    print("| topology | faults | seeds | passed | packets / delivery | storage writes / message | send→display p50 | p99 |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for rows, seeds in ((ROWS, args.seeds), (BIG_ROWS, args.big_seeds)):
            for topology, faults, text in rows:
                if args.only not in topology:
                    continue
                per_delivery, per_message, p50, p99, passed = figures(run(text, seeds, folder))
                print(
                    f"| {topology} | {faults} | 0..{seeds} | {passed} | {per_delivery:.2f} "
                    f"| {per_message:.2f} | {p50:.0f} ms | {p99:.0f} ms |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
