#!/usr/bin/env python3
"""The README's swarm-only detection table: each known-bug variant run on a scenario whose faults
are all drawn by the swarm (no fixed profile), from seed 0 until the first failing seed (at most
1,000). Prints one Markdown row per variant. Needs a release build:
    cargo build --release && python3 scripts/swarm-detection.py
"""
import json
import os
import subprocess

IMSIM = os.environ.get("IMSIM", "target/release/imsim")
SEEDS_MAX = 1_000
CHUNK = 25

# (variant, a scenario with swarm faults only that can expose it)
PAIRS = [
    ("no-receiver-dedupe", "one-to-one"),
    ("ack-before-store", "one-to-one"),
    ("non-idempotent-commit", "one-to-one"),
    ("seq-reuse-after-restart", "one-to-one"),
    ("retry-reorders", "one-to-one"),
    ("watermark-skips-gap", "one-to-one"),
    ("no-gap-pull", "one-to-one"),
    ("sync-off-by-one", "one-to-one"),
    ("store-only-offline", "one-to-one"),
    ("removed-member-still-receives", "group-membership-churn"),
    ("timestamp-order", "one-to-one"),
    ("read-before-display", "receipts-1to1"),
    ("read-count-double", "multi-device"),
    ("ghost-online", "presence-push"),
    ("push-to-one-device", "multi-device"),
    ("dedupe-without-ack", "one-to-one"),
    ("stale-route-counted-delivered", "cluster-swarm-only"),
    ("failover-without-resync", "cluster-swarm-only"),
    ("handover-restarts-seqs", "sharded-logic"),
    ("audience-from-current-members", "group-membership-churn"),
    ("consumer-acks-before-durable", "queue-faults"),
    ("non-idempotent-consumer", "queue-faults"),
]


def cluster_swarm_only():
    """cluster-failover without its fixed gateway crash: every fault drawn by the swarm."""
    import re
    import tempfile
    with open("scenarios/cluster-failover.toml") as f:
        text = f.read()
    text = re.sub(r"\[\[faults\.profile\.gateway_crashes\]\]\n(?:[a-z_]+ = [0-9_]+\n)+", "", text)
    text = text.replace('name = "cluster-failover"', 'name = "cluster-swarm-only"')
    path = os.path.join(tempfile.mkdtemp(), "cluster-swarm-only.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


FILES = {"cluster-swarm-only": cluster_swarm_only()}


def first_failure(variant, scenario):
    """(seed, first invariant, every invariant of that run) of the first failing seed, or None."""
    for start in range(0, SEEDS_MAX, CHUNK):
        command = [IMSIM, "run", FILES.get(scenario, scenario), "--variant", variant, "--seeds",
                   f"{start}..{start + CHUNK}", "--format", "json",
                   "--check-determinism-every", "0"]
        out = subprocess.run(command, capture_output=True, text=True).stdout
        for line in out.splitlines():
            try:
                run = json.loads(line)
            except json.JSONDecodeError:
                continue
            if run.get("seed") is None or run.get("ok") is not False:
                continue
            violations = run.get("violations") or []
            names = sorted({v.get("invariant") for v in violations})
            first = violations[0].get("invariant") if violations else "?"
            return run["seed"], first, names
    return None


catalogue = subprocess.run([IMSIM, "variants", "--format", "json"], capture_output=True,
                           text=True, check=True).stdout
missing = [json.loads(line)["name"] for line in catalogue.splitlines()
           if json.loads(line)["name"] not in dict(PAIRS)]
if missing:
    raise SystemExit(f"no swarm-only scenario for {', '.join(missing)}: add it to PAIRS")

for variant, scenario in PAIRS:
    found = first_failure(variant, scenario)
    if found:
        seed, first, names = found
        print(f"| `{variant}` | {scenario} | {seed + 1} | {first} | {', '.join(names)} |", flush=True)
    else:
        print(f"| `{variant}` | {scenario} | >{SEEDS_MAX} | - |  |", flush=True)
