#!/usr/bin/env bash
# The main job on the embedded default: a store in ./demo-store, a loopback registry
# started here (unless REGISTRY=host:port names one), seeded with a small busybox
# image, pulled cold and then warm, listed, verified, and read back by skopeo.
set -euo pipefail
cd "$(dirname "$0")/.."
STOWAGE=${STOWAGE:-target/release/stowage}
STORE=${STORE:-demo-store}
work=$(mktemp -d)
registry_pid=""
# Keeps the script's own exit status: the registry killed here exits with 143, and
# that must not become the demo's status (a newcomer's first command must say 0).
cleanup() {
  local status=$?
  if [ -n "$registry_pid" ]; then
    kill "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

if [ -z "${REGISTRY:-}" ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  REGISTRY=127.0.0.1:$port
  cat > "$work/registry.yml" <<YAML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}, delete: {enabled: true}}
http: {addr: $REGISTRY}
YAML
  docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 100); do curl -fs "http://$REGISTRY/v2/" >/dev/null && break; sleep 0.1; done
  echo "== started a registry on $REGISTRY (docker-registry, storage in $work)"
fi

echo "== seeding $REGISTRY/demo/busybox:1 (busybox-static, built with umoci, pushed with skopeo)"
mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/busybox"
ln -s busybox "$work/rootfs/bin/sh"
umoci init --layout "$work/seed"
umoci new --image "$work/seed:demo"
umoci insert --image "$work/seed:demo" "$work/rootfs/bin" /bin >/dev/null
umoci config --image "$work/seed:demo" --config.cmd /bin/sh --os linux --architecture amd64 >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$work/seed:demo" "docker://$REGISTRY/demo/busybox:1"

echo "== stowage pull (cold) into $STORE"
"$STOWAGE" --store "$STORE" pull "$REGISTRY/demo/busybox:1"
echo "== stowage pull again (warm: nothing is fetched)"
"$STOWAGE" --store "$STORE" pull "$REGISTRY/demo/busybox:1"
echo "== stowage ls"
"$STOWAGE" --store "$STORE" ls
echo "== stowage verify"
"$STOWAGE" --store "$STORE" verify
echo "== stowage du"
"$STOWAGE" --store "$STORE" du
echo "== skopeo reads the store as an OCI layout"
skopeo inspect "oci:$STORE:$REGISTRY/demo/busybox:1" | grep -E '"(Digest|Architecture)"'
