"""Compares an Autobahn (kosoku) report with autobahn/expected-results.json.

Usage: compare.py REPORT_DIR/index.json autobahn/expected-results.json

Durations and close codes are ignored; each case's `behavior` and `behaviorClose` must equal the
expected ones, every expected case must have run, and no unexpected case may appear. Prints a
summary line such as `autobahn: 298 OK, 3 INFORMATIONAL (301 cases)`.
"""
import collections
import json
import sys

report_path, expected_path = sys.argv[1], sys.argv[2]
report = json.load(open(report_path))
if len(report) != 1:
    sys.exit(f"autobahn: expected one agent in {report_path}, found {list(report)}")
cases = next(iter(report.values()))
expected = json.load(open(expected_path))

problems = []
for case, want in expected.items():
    got = cases.get(case)
    if got is None:
        problems.append(f"{case}: did not run")
        continue
    for field in ("behavior", "behaviorClose"):
        if got.get(field) != want[field]:
            problems.append(f"{case}: {field} {got.get(field)} (expected {want[field]})")
for case in cases:
    if case not in expected:
        problems.append(f"{case}: ran but has no expected result")

counts = collections.Counter(v["behavior"] for v in cases.values())
summary = ", ".join(f"{n} {b}" for b, n in sorted(counts.items(), key=lambda x: -x[1]))
print(f"autobahn: {summary} ({len(cases)} cases)")
if problems:
    print("\n".join(problems))
    sys.exit(f"autobahn: {len(problems)} regression(s) against {expected_path}")
