"""Reads `shardcast bench --json` from stdin; fails unless nothing was lost and frames flowed."""
import json
import sys

report = json.load(sys.stdin)
label = f"{report['server']}: {report['clients']} clients, window {report['window']}"
print(f"{label}: {report['deliveries_per_sec']:.0f} deliveries/s, lost {report['lost']}, "
      f"p99 {report['latency_us']['p99']} us")
if report["lost"] != 0:
    sys.exit(f"{label}: lost {report['lost']} frames")
if not report["deliveries_per_sec"] > 0:
    sys.exit(f"{label}: no deliveries")
if report["deliveries"] != report["publishes"] * report["clients"]:
    sys.exit(f"{label}: {report['deliveries']} deliveries for {report['publishes']} publishes")
