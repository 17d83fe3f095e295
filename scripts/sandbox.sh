#!/usr/bin/env bash
# Run a command in a private sandbox: its own mount, PID and network namespaces, with a
# private /run/netns and /run/hyperplane.  Namespaces the command makes are invisible to
# the host and vanish with the sandbox, so several test runs can share one machine.
#   scripts/sandbox.sh make test-integration
set -euo pipefail
[ "$#" -gt 0 ] || { echo "usage: $0 COMMAND..." >&2; exit 2; }
mkdir -p /run/netns
exec unshare --mount --pid --net --fork --mount-proc --propagation private -- bash -c '
  mount -t tmpfs -o mode=0755 hp-netns /run/netns
  mkdir -p /run/hyperplane && mount -t tmpfs -o mode=0755 hp-state /run/hyperplane
  ip link set lo up 2>/dev/null || true
  exec "$@"' sandbox "$@"
