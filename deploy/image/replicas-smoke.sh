#!/usr/bin/env bash
# Several containers of the image on one PostgreSQL: the closest this machine gets to
# deploy/compose (the postgres and envoy images cannot be pulled here). PostgreSQL is the throwaway
# cluster the tests use (hybrid_assistant.testing.postgres: Debian's server binaries, run as nobody);
# the containers share the host's network, each replica on its own port. Checks: every replica
# SERVING with HA_DATABASE_URL set, a document ingested through the first replica is found by
# retrieval on the last, and a retrieval-augmented Generate there uses it.
#
# Needs `make install` (the host CLI and the PostgreSQL harness), `make postgres` and `make image`.
# Environment: IMAGE, REPLICAS (2), BASE_PORT (16050), STORAGE_DRIVER, RUNTIME.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
IMAGE=${IMAGE:-localhost/hybrid-assistant:cpu}
REPLICAS=${REPLICAS:-2}
BASE_PORT=${BASE_PORT:-16050}
PY=$ROOT/.venv/bin/python
CLI=$ROOT/.venv/bin/hybrid-assistant
TOKEN=replicas-smoke-token
PODMAN=(podman --storage-driver "${STORAGE_DRIVER:-overlay}" --runtime "${RUNTIME:-runc}")

log() { printf '== %s\n' "$*" >&2; }
[[ -x "$CLI" ]] || { log "no $CLI: run make install first"; exit 1; }

read -r DSN PGROOT PGBIN < <("$PY" -c '
from hybrid_assistant.testing.postgres import PostgresServer
s = PostgresServer.start_new()
print(s.create_database("image"), s.root, s.bin_dir)')
KB=$(mktemp -d)
cleanup() {
    for i in $(seq "$REPLICAS"); do "${PODMAN[@]}" rm -f -v "ha-replica-$i" >/dev/null 2>&1 || true; done
    "$PY" -c 'import sys; from pathlib import Path
from hybrid_assistant.testing.postgres import PostgresServer
PostgresServer(Path(sys.argv[2]), Path(sys.argv[1]), "nobody").remove()' "$PGROOT" "$PGBIN" || true
    rm -rf "$KB"
}
trap cleanup EXIT
log "PostgreSQL: $DSN"

nofile=$(ulimit -n)
start=$SECONDS
for i in $(seq "$REPLICAS"); do
    "${PODMAN[@]}" run -d --name "ha-replica-$i" --network host --read-only --health-interval disable \
        --ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096 \
        -e HA_LISTEN="127.0.0.1:$((BASE_PORT + i))" -e HA_HTTP_LISTEN=off -e HA_THREADS=1 \
        -e HA_DATABASE_URL="$DSN" -e HA_ADMIN_TOKEN="$TOKEN" "$IMAGE" >/dev/null 2>&1
done
for i in $(seq "$REPLICAS"); do
    until "$CLI" health -t "127.0.0.1:$((BASE_PORT + i))" >/dev/null 2>&1; do
        if ((SECONDS - start > 300)); then
            log "replica $i not SERVING after 300 s:"; "${PODMAN[@]}" logs "ha-replica-$i" | tail -30; exit 1
        fi
        sleep 0.5
    done
done
log "$REPLICAS replicas SERVING after $((SECONDS - start)) s"

echo "The Zorblax protocol was invented in 2031 by the engineer Mira Quenting to route messages between lunar habitats." >"$KB/zorblax.md"
"$CLI" ingest -t "127.0.0.1:$((BASE_PORT + 1))" --token "$TOKEN" "$KB" 2>/dev/null | tail -1
last="127.0.0.1:$((BASE_PORT + REPLICAS))"
t0=$(date +%s.%N)
until "$CLI" knowledge search -t "$last" "Who invented the Zorblax protocol?" 2>/dev/null | grep -q Zorblax; do
    if (($(date +%s) - ${t0%.*} > 60)); then log "not searchable on $last after 60 s"; exit 1; fi
    sleep 0.2
done
log "ingested through replica 1, searchable on replica $REPLICAS after $(python3 -c "import time; print(f'{time.time() - $t0:.1f}')") s"
"$CLI" generate -t "$last" --rag --temperature 0 --max-tokens 40 "Who invented the Zorblax protocol?"
