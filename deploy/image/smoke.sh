#!/usr/bin/env bash
# Run the CPU image as a container (podman, same storage as deploy/image/build.sh) and check it
# serves: time from `run` to grpc.health.v1 SERVING (polled with the image's own health command),
# the image's HEALTHCHECK, one Generate inside the container, HTTP /health through a published port,
# the server's peak memory under LOAD concurrent streams, and a graceful stop on SIGTERM. The root
# file system is read-only (podman mounts a tmpfs on /tmp), as in deploy/k8s. Prints the image size
# and the timings.
#
# Sandbox notes (see deploy/README.md): crun refuses hybrid cgroups (v1 + v2), so runc runs the
# container; podman's default root ulimits (nofile=1048576, nproc) need CAP_SYS_RESOURCE, so the
# host's own limits are passed instead. Without systemd podman cannot schedule the HEALTHCHECK timer,
# so it is disabled and the check is run once by hand.
#
# Environment: IMAGE, NAME, GRPC_PORT, HTTP_PORT, START_TIMEOUT (s), LOAD (streams, 16), RUNTIME (runc),
# STORAGE_DRIVER.
set -euo pipefail
IMAGE=${IMAGE:-localhost/hybrid-assistant:cpu}
NAME=${NAME:-hybrid-assistant-smoke}
GRPC_PORT=${GRPC_PORT:-15051}
HTTP_PORT=${HTTP_PORT:-18000}
START_TIMEOUT=${START_TIMEOUT:-300}
PROMPT=${PROMPT:-"What is the capital of France? Answer in one sentence."}
LOAD=${LOAD:-16}

log() { printf '== %s\n' "$*" >&2; }

missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
if ((${#missing[@]})); then
    log "installing ${missing[*]} (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
RUNTIME=${RUNTIME:-runc}
PODMAN=(podman --storage-driver "${STORAGE_DRIVER:-overlay}" --runtime "$RUNTIME")

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }

"${PODMAN[@]}" image exists "$IMAGE" || { log "no image $IMAGE: run make image first"; exit 1; }
"${PODMAN[@]}" rm -f -v "$NAME" >/dev/null 2>&1 || true
trap '"${PODMAN[@]}" rm -f -v "$NAME" >/dev/null 2>&1 || true' EXIT

nofile=$(ulimit -n)
log "podman run $IMAGE (gRPC 127.0.0.1:$GRPC_PORT, HTTP 127.0.0.1:$HTTP_PORT)"
start=$(now)
"${PODMAN[@]}" run -d --name "$NAME" --read-only --health-interval disable \
    --ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096 \
    -p "127.0.0.1:$GRPC_PORT:50051" -p "127.0.0.1:$HTTP_PORT:8000" \
    -e HA_ADMIN_TOKEN=smoke-test-token \
    "$IMAGE" >/dev/null

until "${PODMAN[@]}" exec "$NAME" hybrid-assistant health >/dev/null 2>&1; do
    if [[ "$("${PODMAN[@]}" inspect --format '{{.State.Running}}' "$NAME")" != true ]]; then
        log "the container exited before it was healthy:"
        "${PODMAN[@]}" logs "$NAME" | tail -40
        exit 1
    fi
    if [[ $(elapsed "$start" "$(now)" | cut -d. -f1) -ge $START_TIMEOUT ]]; then
        log "not SERVING after ${START_TIMEOUT}s:"
        "${PODMAN[@]}" logs "$NAME" | tail -40
        exit 1
    fi
    sleep 0.5
done
startup=$(elapsed "$start" "$(now)")
log "SERVING after ${startup}s"

log "the image's HEALTHCHECK (podman healthcheck run)"
"${PODMAN[@]}" healthcheck run "$NAME" && echo healthy

log "Generate inside the container: $PROMPT"
gen_start=$(now)
"${PODMAN[@]}" exec "$NAME" hybrid-assistant generate "$PROMPT" --max-tokens 32 --temperature 0
gen_time=$(elapsed "$gen_start" "$(now)")

log "from the host through the published ports"
curl -sf "http://127.0.0.1:$HTTP_PORT/health"
echo
if [[ -x .venv/bin/hybrid-assistant ]]; then
    .venv/bin/hybrid-assistant health --target "127.0.0.1:$GRPC_PORT" && echo "gRPC health from the host: SERVING"
fi

memory() { "${PODMAN[@]}" exec "$NAME" sh -c 'grep -E "^VmHWM" /proc/1/status' | awk '{printf "%.0f MiB", $2 / 1024}'; }
rss_idle=$(memory)
log "$LOAD concurrent streams of 128 tokens (inside the container)"
load_start=$(now)
"${PODMAN[@]}" exec "$NAME" sh -c "for i in \$(seq $LOAD); do hybrid-assistant generate 'Tell me about the history of Paris.' \
    --max-tokens 128 --ignore-eos --temperature 0 >/dev/null & done; wait"
load_time=$(elapsed "$load_start" "$(now)")
rss_load=$(memory)
size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")

log "docker-style stop (SIGTERM, then the server drains)"
stop_start=$(now)
"${PODMAN[@]}" stop -t 40 "$NAME" >/dev/null
stop_time=$(elapsed "$stop_start" "$(now)")
exit_code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$NAME")

cat <<SUMMARY
image:               $IMAGE
image size:          $((size / 1000000)) MB ($size bytes)
start-up to SERVING: ${startup} s (podman run -> grpc.health.v1 SERVING, polled every 0.5 s)
generate:            ${gen_time} s (podman exec + CLI start + 32 tokens)
server peak RSS:     $rss_idle after one Generate, $rss_load after $LOAD streams × 128 tokens (${load_time} s)
stop on SIGTERM:     ${stop_time} s, exit code $exit_code
SUMMARY
