"""Reads `shardcast bench --json` from stdin; fails unless nothing was lost and frames flowed, and
the figures of a server the bench started on this machine are there and in range.

It reads a single run's report. The bench's own exit status already fails a run that lost frames
or went past `--max-p99` (a sweep too); this adds the checks of figures that only make sense for
one run of a server on this machine.

`--self-test` feeds it doctored reports instead (a figure missing, zero, NaN or huge, deliveries
that do not add up) and fails unless it rejects each of them and accepts a good one."""
import copy
import json
import math
import sys

# A delivery takes at most a segment to its client and an ack back; the publishers' frames,
# acks and echoes add a few per round. The counter is the machine's: 4 leaves room for others.
SEGMENTS_PER_DELIVERY_MAX = 4
# The server's data segments to its subscribers (TCP_INFO of the receiving sockets: exact). A
# delivery of the CI's 32 B payloads fits in one segment, and coalesced writes carry several;
# the pongs to the clients' pings add a few per run. More than 2 is a bug, in the server or the
# bench.
SERVER_DATA_SEGMENTS_PER_DELIVERY_MAX = 2
# Write calls (or io_uring sends) per delivery: at most one per client per round, and a round
# carries one or more deliveries; 2 leaves room for a frame split over two writes.
WRITE_SYSCALLS_PER_DELIVERY_MAX = 2
# Bytes the clients read per delivery beyond the payload: a frame header (2 to 14 bytes), with
# wss a TLS record's 22 to 29 (per write, which often carries several deliveries), and the pongs
# to the clients' pings now and then.
WIRE_OVERHEAD_MAX = 64
# A JSON document (`--payload-json B`) is at most B bytes and at least B - 100.
JSON_SHORT_MAX = 100
# The figures every report must hold (as a key; its value may be null where noted below).
REQUIRED = (
    "server_cpu_ns_per_publication",
    "tcp_segments_per_delivery",
    "write_syscalls_per_delivery",
    "server_data_segments_per_delivery",
    "wire_bytes_per_delivery",
    "deflate",
)


def has_engine_counters(server):
    """Whether the server is shardcast's engine (alone, behind axum, or as nodes), whose own
    counters give write calls; the naive baseline, Bun, Node `ws` and a `--target` have none."""
    kind = server.split()[0]
    return kind.startswith("embedded") or kind == "axum"


def in_range(value, high):
    """Whether `value` is a finite number above 0 and at most `high`."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and 0 < value <= high)


def check(report, linux):
    """The first thing wrong with `report` (as a message), or None."""
    label = f"{report.get('server')}: {report.get('clients')} clients, window {report.get('window')}"
    for key in REQUIRED:
        if key not in report:
            return f"{label}: no {key} in the report"
    if report["lost"] != 0:
        return f"{label}: lost {report['lost']} frames"
    if not report["deliveries_per_sec"] > 0:
        return f"{label}: no deliveries"
    topics = report.get("topics")
    if topics is not None:
        expected = topics["expected_deliveries"]
        if report["deliveries"] != expected:
            return (f"{label}: {report['deliveries']} deliveries, {expected} expected from "
                    f"{report['publishes']} publishes to {topics['topics']} topics")
    elif report["deliveries"] != report["publishes"] * report["clients"]:
        return f"{label}: {report['deliveries']} deliveries for {report['publishes']} publishes"
    cpu = report["server_cpu_ns_per_publication"]
    if not in_range(cpu, math.inf):
        return f"{label}: server CPU per publication is {cpu}"
    segments = report["tcp_segments_per_delivery"]
    if not in_range(segments, SEGMENTS_PER_DELIVERY_MAX):
        return f"{label}: {segments} TCP segments per delivery"
    data = report["server_data_segments_per_delivery"]
    if (linux or data is not None) and not in_range(data, SERVER_DATA_SEGMENTS_PER_DELIVERY_MAX):
        return f"{label}: {data} server data segments per delivery (tcpi_data_segs_in)"
    writes = report["write_syscalls_per_delivery"]
    needed = has_engine_counters(report["server"])
    if (needed or writes is not None) and not in_range(writes, WRITE_SYSCALLS_PER_DELIVERY_MAX):
        return f"{label}: {writes} write calls per delivery"
    return check_wire(report, label)


def check_wire(report, label):
    """What is wrong with the bytes on the wire and the deflate section of `report`, or None.

    Plain frames carry the whole payload and a header; compressed ones (`--deflate`, where the
    server accepted it) may take fewer bytes than the payload, never more than plain ones."""
    deflate = report["deflate"]
    compressed = 0
    if deflate is not None:
        negotiated, compressed = deflate.get("negotiated"), deflate.get("compressed_deliveries")
        counts = (negotiated, compressed)
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            return f"{label}: deflate negotiated {negotiated}, compressed {compressed}"
        if negotiated > report["clients"] or compressed > report["deliveries"]:
            return (f"{label}: deflate negotiated by {negotiated} of {report['clients']} clients, "
                    f"{compressed} of {report['deliveries']} deliveries compressed")
        if negotiated == 0 and compressed > 0:
            return f"{label}: {compressed} deliveries compressed, none negotiated"
    payload = report["payload_bytes"]
    wire = report["wire_bytes_per_delivery"]
    if not in_range(wire, payload + WIRE_OVERHEAD_MAX):
        return f"{label}: {wire} wire bytes per delivery for {payload} B payloads"
    if compressed == 0:
        smallest = payload - (JSON_SHORT_MAX if report.get("payload") == "json" else 0)
        if wire < smallest + 2:
            return (f"{label}: {wire} wire bytes per delivery of plain frames, whose payloads "
                    f"have at least {smallest} B")
    return None


def self_test():
    """Fails unless `check` rejects each doctored report and accepts the good ones."""
    good = {
        "server": "embedded", "clients": 50, "publishers": 1, "window": 4, "deliveries": 10000,
        "deliveries_per_sec": 200000.0, "publishes": 200, "lost": 0,
        "latency_us": {"p50": 500, "p90": 800, "p99": 900, "p999": 1000, "max": 1000},
        "server_cpu_ns_per_publication": 150000.0, "write_syscalls_per_delivery": 0.25,
        "tcp_segments_per_delivery": 0.51, "server_data_segments_per_delivery": 0.25,
        "payload_bytes": 32, "payload": "binary", "wire_bytes_per_delivery": 34.0,
        "topics": None, "deflate": None,
    }
    topics = dict(good, deliveries=2000, topics={
        "topics": 10, "subscriptions": 2, "expected_deliveries": 2000})
    naive = dict(good, server="naive", write_syscalls_per_delivery=None)

    def doctored(base, **changes):
        report = copy.deepcopy(base)
        for key, value in changes.items():
            if value is KeyError:
                del report[key]
            else:
                report[key] = value
        return report

    json_deflated = dict(good, payload="json", payload_bytes=1024, wire_bytes_per_delivery=340.0,
                         deflate={"negotiated": 50, "compressed_deliveries": 10000})
    json_declined = dict(json_deflated, wire_bytes_per_delivery=970.0,
                         deflate={"negotiated": 0, "compressed_deliveries": 0})
    accepted = [good, topics, naive, dict(good, server="embedded x2 nats"), json_deflated,
                json_declined, dict(good, server="embedded-tls", wire_bytes_per_delivery=39.5)]
    rejected = {
        "no write calls key": doctored(good, write_syscalls_per_delivery=KeyError),
        "no segments key": doctored(good, server_data_segments_per_delivery=KeyError),
        "no machine segments key": doctored(good, tcp_segments_per_delivery=KeyError),
        "no CPU key": doctored(good, server_cpu_ns_per_publication=KeyError),
        "zero segments": doctored(good, server_data_segments_per_delivery=0),
        "NaN segments": doctored(good, server_data_segments_per_delivery=float("nan")),
        "huge segments": doctored(good, server_data_segments_per_delivery=1000.0),
        "null segments": doctored(good, server_data_segments_per_delivery=None),
        "segments as text": doctored(good, server_data_segments_per_delivery="0.25"),
        "zero write calls": doctored(good, write_syscalls_per_delivery=0),
        "null write calls of the engine": doctored(good, write_syscalls_per_delivery=None),
        "huge write calls": doctored(good, write_syscalls_per_delivery=50.0),
        "infinite CPU": doctored(good, server_cpu_ns_per_publication=float("inf")),
        "huge machine segments": doctored(good, tcp_segments_per_delivery=40.0),
        "lost frames": doctored(good, lost=3),
        "topics mismatch": doctored(topics, deliveries=1999),
        "topics counted as a broadcast": doctored(topics, deliveries=10000),
        "broadcast mismatch": doctored(good, deliveries=9999),
        "no wire bytes key": doctored(good, wire_bytes_per_delivery=KeyError),
        "no deflate key": doctored(good, deflate=KeyError),
        "null wire bytes": doctored(good, wire_bytes_per_delivery=None),
        "zero wire bytes": doctored(good, wire_bytes_per_delivery=0),
        "wire bytes per publication": doctored(good, wire_bytes_per_delivery=34.0 * 50),
        "plain frames smaller than their payload": doctored(good, wire_bytes_per_delivery=20.0),
        "plain JSON far smaller than asked": doctored(json_declined, wire_bytes_per_delivery=500.0),
        "more compressed than delivered": doctored(
            json_deflated, deflate={"negotiated": 50, "compressed_deliveries": 10001}),
        "more negotiated than clients": doctored(
            json_deflated, deflate={"negotiated": 51, "compressed_deliveries": 10000}),
        "compressed without negotiating": doctored(
            json_declined, deflate={"negotiated": 0, "compressed_deliveries": 3}),
        "deflate counts missing": doctored(json_deflated, deflate={}),
    }
    failures = [f"accepted {name}" for name, report in rejected.items() if not check(report, True)]
    failures += [f"rejected a good report: {check(r, True)}" for r in accepted if check(r, True)]
    # Off Linux, TCP_INFO may be missing: null is fine there, nonsense is not.
    off_linux = doctored(good, server_data_segments_per_delivery=None)
    if check(off_linux, False):
        failures.append(f"rejected null segments off Linux: {check(off_linux, False)}")
    if not check(doctored(good, server_data_segments_per_delivery=0), False):
        failures.append("accepted zero segments off Linux")
    # Through JSON, as the bench prints it: NaN is no JSON, the bench prints null for it.
    if check(json.loads(json.dumps(good)), True):
        failures.append("rejected the good report read back from JSON")
    if failures:
        sys.exit("bench-check self-test: " + "; ".join(failures))
    print(f"bench-check self-test: {len(rejected) + 1} doctored reports rejected, "
          f"{len(accepted) + 2} good ones accepted")


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        return
    report = json.load(sys.stdin)
    if "rows" in report:
        sys.exit("bench-check reads a single run's --json, not a sweep's: gate a sweep on the "
                 "bench's exit status (--max-p99), or check its runs one at a time")
    # First what was measured, so that a failure's log shows every figure.
    print(f"{report.get('server')}: {report.get('clients')} clients, window "
          f"{report.get('window')}: {report.get('deliveries_per_sec')} deliveries/s, lost "
          f"{report.get('lost')}, p99 {report.get('latency_us', {}).get('p99')} us, "
          f"server CPU {report.get('server_cpu_ns_per_publication')} ns/publication, "
          f"{report.get('tcp_segments_per_delivery')} TCP segments/delivery (machine), "
          f"{report.get('server_data_segments_per_delivery')} data segments/delivery (server), "
          f"{report.get('write_syscalls_per_delivery')} write calls/delivery, "
          f"{report.get('wire_bytes_per_delivery')} wire bytes/delivery, "
          f"deflate {report.get('deflate')}")
    problem = check(report, sys.platform.startswith("linux"))
    if problem:
        sys.exit(problem)


main()
