#!/usr/bin/env bash
# ghz against a stack started by `feedserve up`: TLS with its CA, and its API key in the metadata.
#   bench/ghz/ghz.sh bench/ghz/feed.json [more ghz flags]
# The CA is $FEEDSERVE_HOME/tls/ca.pem (default ~/.cache/feedserve); the key is $FEEDSERVE_API_KEY, else
# $FEEDSERVE_HOME/admin.key. A stack started with --plaintext needs `--insecure` instead of the CA.
set -euo pipefail
home="${FEEDSERVE_HOME:-$HOME/.cache/feedserve}"
key="${FEEDSERVE_API_KEY:-$(cat "$home/admin.key" 2>/dev/null || true)}"
if [ -z "$key" ]; then
  echo "no API key: set FEEDSERVE_API_KEY, or start the stack once with feedserve up (it writes $home/admin.key)" >&2
  exit 2
fi
tls=(--cacert "$home/tls/ca.pem")
[ -f "$home/tls/ca.pem" ] || tls=(--insecure)
exec ghz "${tls[@]}" --metadata "{\"authorization\": \"Bearer $key\"}" "$@"
