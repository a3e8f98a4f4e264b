"""Reads `shardcast bench --json` from stdin; fails unless nothing was lost and frames flowed, and
the figures of a server the bench started on this machine are there and in range."""
import json
import math
import sys

# A delivery takes at most a segment to its client and an ack back; the publishers' frames,
# acks and echoes add a few per round. The counter is the machine's: 4 leaves room for others.
SEGMENTS_PER_DELIVERY_MAX = 4

report = json.load(sys.stdin)
label = f"{report['server']}: {report['clients']} clients, window {report['window']}"
for key in ("server_cpu_ns_per_publication", "tcp_segments_per_delivery"):
    if key not in report:
        sys.exit(f"{label}: no {key} in the report")
print(f"{label}: {report['deliveries_per_sec']:.0f} deliveries/s, lost {report['lost']}, "
      f"p99 {report['latency_us']['p99']} us, "
      f"server CPU {report['server_cpu_ns_per_publication']} ns/publication, "
      f"{report['tcp_segments_per_delivery']} TCP segments/delivery")
if report["lost"] != 0:
    sys.exit(f"{label}: lost {report['lost']} frames")
if not report["deliveries_per_sec"] > 0:
    sys.exit(f"{label}: no deliveries")
if report["deliveries"] != report["publishes"] * report["clients"]:
    sys.exit(f"{label}: {report['deliveries']} deliveries for {report['publishes']} publishes")
cpu = report["server_cpu_ns_per_publication"]
if not (isinstance(cpu, (int, float)) and math.isfinite(cpu) and cpu > 0):
    sys.exit(f"{label}: server CPU per publication is {cpu}")
segments = report["tcp_segments_per_delivery"]
if not (isinstance(segments, (int, float)) and 0 < segments <= SEGMENTS_PER_DELIVERY_MAX):
    sys.exit(f"{label}: {segments} TCP segments per delivery")
