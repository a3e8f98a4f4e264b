#!/usr/bin/env bash
# Runs every Autobahn|Testsuite case (517, permessage-deflate's 12.* and 13.* included) against
# `shardcast serve --echo` on loopback, and compares the result with expected-results.json.
# Usage: autobahn/run.sh [path/to/shardcast]   (default: target/debug/shardcast)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/shardcast}
venv=target/autobahn-venv
reports=target/autobahn-reports
port=${AUTOBAHN_PORT:-9401}

if [ ! -x "$venv/bin/kosoku" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check kosoku==0.1.0
fi
# kosoku 0.1.0 hands the deflate cases an uncompressed message as a str: see kosoku_fix.py.
"$venv/bin/python" autobahn/kosoku_fix.py

"$bin" serve --echo --max-message-size 67108864 --addr "127.0.0.1:$port" > target/autobahn-server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    grep -q "serving on" target/autobahn-server.log && break
    sleep 0.1
done

rm -rf "$reports"
timeout 900 "$venv/bin/kosoku" "127.0.0.1:$port" -p 4 -o "$reports" > target/autobahn-run.log 2>&1 || {
    tail -20 target/autobahn-run.log
    exit 1
}
python3 autobahn/compare.py "$reports/index.json" autobahn/expected-results.json
