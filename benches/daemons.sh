# Sourced by run.sh and factored.sh once RUN and LOGS are set: the daemons a benchmark
# runs besides the tools (a private podman store, the wan proxy), stopping them, and
# the clean-up of what a run killed hard left behind.

PODMAN=(podman --root "$RUN/podman/root" --runroot "$RUN/podman/runroot" --storage-driver overlay
  --cgroup-manager cgroupfs --events-backend file)

podman_wipe() { # remove the podman store in $RUN/podman, images and any mounts
  [ -d "$RUN/podman" ] || return 0
  "${PODMAN[@]}" rmi -af >/dev/null 2>&1 || true
  awk -v d="$RUN/podman/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$RUN/podman"
}

stop_pid() { # stop_pid PID: TERM, then KILL after 5 s
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

reap_orphans() { # reap_orphans DIR: a run killed hard (SIGKILL) leaves its daemons
  # behind: stop the ones it recorded in $RUN/pids whose command line names DIR.
  [ -f "$RUN/pids" ] || return 0
  local pid
  while read -r pid; do
    grep -qF "$1" "/proc/$pid/cmdline" 2>/dev/null && kill "$pid" 2>/dev/null || true
  done < "$RUN/pids"
  sleep 1
}

start_proxy() { # stowage-faultproxy with the wan link in front of $REGISTRY: sets PROXY
  "$RUN/bin/stowage-faultproxy" --upstream "$REGISTRY" --listen 127.0.0.1:0 \
    --delay-ms $WAN_DELAY_MS --rate $WAN_RATE > "$LOGS/proxy.out" 2> "$LOGS/proxy.log" 9>&- &
  proxy_pid=$!
  echo $proxy_pid >> "$RUN/pids"
  local addr=""
  for _ in $(seq 100); do
    addr=$(sed -n 's/^listening on //p' "$LOGS/proxy.out")
    [ -n "$addr" ] && break
    kill -0 "$proxy_pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$addr" ] || die "stowage-faultproxy did not start (see $LOGS/proxy.log)"
  curl -fs "http://$addr/v2/" >/dev/null || die "no registry behind the proxy at $addr"
  PROXY=$addr
}
