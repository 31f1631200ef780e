#!/usr/bin/env bash
# Build the CPU image without a Docker daemon or a registry: buildah (daemonless, as root, chroot
# isolation) builds the repository's Dockerfile exactly as `docker build --target cpu` would, with
# two build args swapped for local sources:
#   BASE_IMAGE       python:3.11-slim cannot be pulled here, so a Debian bookworm root filesystem made
#                    by mmdebstrap (python3 + venv, CA certificates) becomes a local image first;
#   TORCH_INDEX_URL  download.pytorch.org is unreachable here, so the same torch==2.13.0 CPU wheel and
#                    its dependencies, fetched by pip (its configured sources), are served as a PEP 503
#                    index on 127.0.0.1 for the length of the build (chroot isolation shares the host's
#                    network; with Docker the equivalent is `docker build --network host`).
# Idempotent: the base is made only when missing, the wheels only once, and --layers reuses every
# step whose inputs did not change.
#
# Storage: overlay by default (layers are diffs; the kernel here has native overlay). Where it is
# refused (e.g. inside a container), STORAGE_DRIVER=vfs works anywhere but stores every layer, and
# every step's working container, as a full copy of the file system: with --layers this build then
# needs ~60 GB, so under vfs the steps run without --layers (one container per stage, ~8 GB at peak)
# and every build starts from scratch.
#
# pip inside the build trusts the base's CA certificates; behind a TLS-intercepting proxy (as here) the
# CA bundle pip uses on the host goes in as the build secret pip_cert (never stored in a layer).
#
# Environment: IMAGE, BASE_IMAGE, CONTEXT (default: this checkout), WORK (scratch, default build/image),
# TORCH_INDEX_URL (set: use that index, e.g. https://download.pytorch.org/whl/cpu, and serve none),
# TORCH_INDEX_PORT, SUITE, MIRROR (default: the host's apt sources), PIP_CERT_FILE (default: pip's
# configured cert, if any), STORAGE_DRIVER (overlay, or vfs), LAYERS (true; false under vfs).
# Needs root.
#
#   deploy/image/build.sh          # base (if missing), then the image
#   deploy/image/build.sh base     # the base only
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
IMAGE=${IMAGE:-localhost/hybrid-assistant:cpu}
BASE_IMAGE=${BASE_IMAGE:-localhost/hybrid-assistant-base:bookworm}
CONTEXT=${CONTEXT:-$ROOT}
WORK=${WORK:-$ROOT/build/image}
TORCH_INDEX_PORT=${TORCH_INDEX_PORT:-18765}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-}
TORCH=torch==2.13.0
PIP_CERT_FILE=${PIP_CERT_FILE:-${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}}
export STORAGE_DRIVER=${STORAGE_DRIVER:-overlay}
if [[ "$STORAGE_DRIVER" == vfs ]]; then
    LAYERS=${LAYERS:-false}
else
    LAYERS=${LAYERS:-true}
fi
BUILDAH=(buildah --storage-driver "$STORAGE_DRIVER")

log() { printf '== %s\n' "$*" >&2; }

need_tools() {
    local missing=()
    command -v buildah >/dev/null || missing+=(buildah)
    command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
    if ((${#missing[@]})); then
        log "installing ${missing[*]} (Debian packages)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

# The base: what python:3.11-slim gives the Dockerfile (python3, its venv module, CA certificates,
# netbase, useradd), from Debian packages. Documentation and translations are left out, as in the
# slim images.
build_base() {
    if "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
        log "base $BASE_IMAGE present"
        return
    fi
    mkdir -p "$WORK"
    local tarball="$WORK/base-rootfs.tar"
    log "base: mmdebstrap $SUITE -> $tarball"
    rm -f "$tarball"
    # shellcheck disable=SC2086  # MIRROR is empty (the host's sources) or one mirror URL.
    mmdebstrap --variant=minbase \
        --include=python3,python3-venv,ca-certificates,netbase,passwd \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        "$SUITE" "$tarball" $MIRROR
    log "base: import as $BASE_IMAGE"
    local ctr
    ctr=$("${BUILDAH[@]}" from scratch)
    "${BUILDAH[@]}" add "$ctr" "$tarball" /
    # LANG as in the official python images: UTF-8 text I/O without a locales package.
    "${BUILDAH[@]}" config --env LANG=C.UTF-8 --cmd python3 \
        --label org.opencontainers.image.description="Debian $SUITE minbase + python3, venv (mmdebstrap)" "$ctr"
    "${BUILDAH[@]}" commit --rm "$ctr" "$BASE_IMAGE" >/dev/null
    rm -f "$tarball"
}

# A PEP 503 index with torch and its dependencies: one folder per normalized project name, whose
# directory listing (python -m http.server) is the page pip reads.
build_torch_index() {
    local index="$WORK/torch-index" wheels="$WORK/torch-wheels"
    if [[ -d "$index/torch" ]]; then
        log "torch index present ($index)"
        return
    fi
    log "torch index: pip download $TORCH (and its dependencies)"
    mkdir -p "$wheels"
    python3 -m pip download -q --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d "$wheels" "$TORCH"
    rm -rf "$index.tmp" && mkdir -p "$index.tmp"
    local whl name
    for whl in "$wheels"/*.whl; do
        name=$(basename "$whl" | cut -d- -f1 | tr '[:upper:]_.' '[:lower:]--')
        mkdir -p "$index.tmp/$name"
        ln -f "$whl" "$index.tmp/$name/" 2>/dev/null || cp "$whl" "$index.tmp/$name/"
    done
    mv "$index.tmp" "$index"
}

serve_torch_index() {
    python3 -m http.server --bind 127.0.0.1 --directory "$WORK/torch-index" "$TORCH_INDEX_PORT" \
        >"$WORK/torch-index.log" 2>&1 &
    INDEX_PID=$!
    trap 'kill "$INDEX_PID" 2>/dev/null || true' EXIT
    for _ in $(seq 50); do
        if python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$TORCH_INDEX_PORT/torch/', timeout=1)" 2>/dev/null; then
            return
        fi
        sleep 0.2
    done
    log "the torch index did not answer on 127.0.0.1:$TORCH_INDEX_PORT (see $WORK/torch-index.log)"
    exit 1
}

# Always hand over a secret (empty when there is no CA to add): buildah fails a build whose RUN mounts
# a secret it was not given, where BuildKit skips it.
cert_secret() {
    local src="$WORK/no-pip-cert"
    if [[ -n "$PIP_CERT_FILE" && -s "$PIP_CERT_FILE" ]]; then
        src=$PIP_CERT_FILE
    else
        : >"$src"
    fi
    printf 'id=pip_cert,src=%s' "$src"
}

main() {
    need_tools
    build_base
    if [[ "${1:-}" == base ]]; then
        return
    fi
    local torch_index=${TORCH_INDEX_URL:-}
    if [[ -z "$torch_index" ]]; then
        build_torch_index
        serve_torch_index
        torch_index="http://127.0.0.1:$TORCH_INDEX_PORT/"
    fi
    log "buildah bud --target cpu -> $IMAGE (context $CONTEXT)"
    local start=$SECONDS
    # --format docker keeps HEALTHCHECK (the OCI image config has no field for it).
    "${BUILDAH[@]}" bud --isolation chroot --layers="$LAYERS" --force-rm --format docker --target cpu \
        --secret "$(cert_secret)" \
        --build-arg BASE_IMAGE="$BASE_IMAGE" \
        --build-arg TORCH_INDEX_URL="$torch_index" \
        -f "$CONTEXT/Dockerfile" -t "$IMAGE" "$CONTEXT"
    log "built $IMAGE in $((SECONDS - start)) s; size: $("${BUILDAH[@]}" images --format '{{.Size}}' "$IMAGE")"
}

main "$@"
