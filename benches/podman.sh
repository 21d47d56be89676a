# Sourced by run.sh and factored.sh once RUN is set: a private podman store under
# $RUN/podman, and the clean-up of what a run killed hard left behind.

PODMAN=(podman --root "$RUN/podman/root" --runroot "$RUN/podman/runroot" --storage-driver overlay
  --cgroup-manager cgroupfs --events-backend file)

podman_wipe() { # remove the podman store in $RUN/podman, images and any mounts
  [ -d "$RUN/podman" ] || return 0
  "${PODMAN[@]}" rmi -af >/dev/null 2>&1 || true
  awk -v d="$RUN/podman/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$RUN/podman"
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
