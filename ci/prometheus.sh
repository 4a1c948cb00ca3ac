#!/usr/bin/env bash
# Unpack Debian's Prometheus server into .prometheus/ for the monitoring test (no install, no
# service): tests/test_reliability.py runs it against Ray's metrics endpoint. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .prometheus/usr/bin/prometheus ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# apt-get download needs the package lists; fetch them only when they are missing.
(cd "$tmp" && { apt-get download -q prometheus 2>/dev/null || { apt-get update -qq && apt-get download -q prometheus; }; })
dpkg-deb -x "$tmp"/prometheus_*.deb .prometheus
.prometheus/usr/bin/prometheus --version | head -1
