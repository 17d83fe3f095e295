#!/usr/bin/env bash
# make test-container: run the whole test suite inside a privileged container, built here
# without any image registry, and prove where it ran.
#
#   1. a Debian root filesystem made with debootstrap (cached in build/container/rootfs)
#   2. a wheelhouse of the project's Python dependencies made on this host with
#      `pip download` (cached in build/container/wheels)
#   3. the root filesystem imported into podman, and a virtual environment installed in it
#      from the wheelhouse with no network (the image is cached in podman's storage, which
#      lives in build/container/storage: nothing outside build/)
#   4. a negative control: the same image WITHOUT --privileged must fail `ip netns add`
#   5. the unit and integration suites in a privileged container with `--network none`,
#      the JUnit XML written to build/container/results/junit.xml
#   6. the host's firewall, forwarding settings, /run/netns and podman's default storage
#      places are compared with what they were before; any change fails the run
#
# Needs root. Installs podman, runc and debootstrap with apt-get when they are missing.
# Knobs (environment): DEBIAN_MIRROR, SUITE_TIMEOUT (seconds, default 1500), PYTEST_ARGS.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$ROOT/build/container
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE_TIMEOUT=${SUITE_TIMEOUT:-1500}
PACKAGES=iproute2,iputils-ping,curl,iperf3,nftables,tcpdump,ethtool,traceroute,python3,python3-venv,procps,mariadb-server,postgresql,redis-server,memcached,nodejs
# installed by apt inside the new root filesystem: debootstrap's resolver cannot follow
# their dependencies (npm's alternatives)
APT_PACKAGES="npm graphviz"
IMAGE_REPO=localhost/hyperplane-test
RUN_ID=hp-test-$$
CONTAINERS=("$RUN_ID-venv" "$RUN_ID-control" "$RUN_ID-suite")

say() { printf 'test-container: %s\n' "$*"; }
die() { printf 'test-container: FAIL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || { echo "test-container: needs root (namespaces, podman): sudo make test-container" >&2; exit 2; }

# Everything this script mounts (podman's overlay layers, debootstrap's /proc and /sys) happens
# in a private mount namespace, so no mount can outlive the script on the host.
if [ "${HP_TEST_CONTAINER_MNTNS:-}" != 1 ]; then
  HP_TEST_CONTAINER_MNTNS=1 exec unshare --mount --propagation private -- bash "${BASH_SOURCE[0]}" "$@"
fi

START=$SECONDS
mkdir -p "$BUILD"

# --- host tools -------------------------------------------------------------------------
missing=()
for pair in podman:podman runc:runc debootstrap:debootstrap conmon:conmon; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -qq
  timeout 900 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# containers/image keeps a blob-info cache in /var/lib/containers/cache whatever --root says
# (podman import and commit write it). /var/lib is made read-only for this script, in its
# private mount namespace: podman then keeps that cache in memory and writes nothing there.
mount --bind /var/lib /var/lib
mount -o remount,bind,ro /var/lib

# --- podman, confined to build/container ------------------------------------------------
# Image storage and podman's database live in build/container/storage (kept between runs,
# as a cache); its run-time state lives in build/container/run, which is made afresh for
# every run and removed at the end. Locks are files there too (no /dev/shm lock).
RUNSTATE=$BUILD/run
rm -rf "$RUNSTATE"
# podman's database records the paths it was made with: a moved or copied tree starts afresh
if [ -d "$BUILD/storage" ] && [ "$(cat "$BUILD/storage.path" 2>/dev/null)" != "$BUILD" ]; then
  rm -rf "$BUILD/storage"
fi
echo "$BUILD" >"$BUILD/storage.path"
mkdir -p "$BUILD/storage" "$RUNSTATE/storage" "$RUNSTATE/libpod" "$RUNSTATE/tmp" \
         "$RUNSTATE/networks" "$BUILD/results"
cat >"$RUNSTATE/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$BUILD/storage"
runroot = "$RUNSTATE/storage"
EOF
cat >"$RUNSTATE/containers.conf" <<EOF
[containers]
netns = "none"

[network]
network_config_dir = "$RUNSTATE/networks"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$RUNSTATE/events.log"
tmp_dir = "$RUNSTATE/libpod"
static_dir = "$BUILD/storage/libpod"
volume_path = "$BUILD/storage/volumes"
image_copy_tmp_dir = "$RUNSTATE/tmp"
lock_type = "file"
EOF
# podman also makes short-lived files in /var/tmp whatever TMPDIR says: redirect it too
mount --bind "$RUNSTATE/tmp" /var/tmp
export CONTAINERS_STORAGE_CONF=$RUNSTATE/storage.conf
export CONTAINERS_CONF=$RUNSTATE/containers.conf
export TMPDIR=$RUNSTATE/tmp
PODMAN=(podman --root "$BUILD/storage" --runroot "$RUNSTATE/storage" --tmpdir "$RUNSTATE/libpod"
        --runtime runc --cgroup-manager cgroupfs --events-backend file)
pm() { "${PODMAN[@]}" "$@"; }

# Explicit limits equal to the host's hard limits: podman otherwise asks for 1048576, more
# than root may set here (no CAP_SYS_RESOURCE). podman 4.3 also lowers its own RLIMIT_NPROC
# to 32768 when it starts (seen with strace), and a container cannot get more than podman
# has, so nproc is capped there.
hard() { local v; v=$(ulimit -H "$1"); [ "$v" = unlimited ] && v=$2; [ "$v" -gt "$2" ] && v=$2; echo "$v"; }
NOFILE=$(hard -n 1048576)
NPROC=$(hard -u 32768)
# With runc and cgroupfs, podman makes cgroups under the parent in every hierarchy (and a
# "conmon" one beside the containers'); a parent of our own per run is removed at the end.
CGROUP_PARENT=/$RUN_ID
RUN_OPTS=(--network none --cgroup-parent "$CGROUP_PARENT"
          --ulimit "nofile=$NOFILE:$NOFILE" --ulimit "nproc=$NPROC:$NPROC")

# Containers of this run, their cgroups, and runc's state folder when this run made it.
remove_leftovers() {
  local name dir
  for name in "${CONTAINERS[@]}"; do
    pm rm -f -t 5 "$name" >/dev/null 2>&1 || true
  done
  for _ in 1 2 3 4 5; do
    for dir in /sys/fs/cgroup/*"$CGROUP_PARENT" /sys/fs/cgroup"$CGROUP_PARENT"; do
      [ -d "$dir" ] && find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    compgen -G "/sys/fs/cgroup/*$CGROUP_PARENT" >/dev/null || break
    sleep 0.2
  done
  [ -n "$RUNC_ROOT_EXISTED" ] || rmdir /run/runc 2>/dev/null || true
  return 0
}

# --- what must not change on the host -------------------------------------------------------
host_state() {
  echo "nft ruleset sha256: $(nft list ruleset 2>&1 | sha256sum | cut -c1-64)"
  echo "net.ipv4.ip_forward: $(cat /proc/sys/net/ipv4/ip_forward)"
  echo "net.ipv6.conf.all.forwarding: $(cat /proc/sys/net/ipv6/conf/all/forwarding 2>/dev/null || echo -)"
  echo "/run/netns: $(find /run/netns -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort | tr '\n' ' ')"
  echo "root links: $(ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')"
  local place
  for place in /var/lib/containers /run/containers /run/libpod /var/run/libpod \
               /dev/shm/libpod_lock /etc/containers/networks /sys/fs/cgroup/*/libpod_parent \
               /sys/fs/cgroup/*"$CGROUP_PARENT" /sys/fs/cgroup"$CGROUP_PARENT"; do
    [ -e "$place" ] && echo "exists: $place"
  done
  # mounts in the host's (PID 1's) mount namespace under the build folder
  grep -F " $BUILD" /proc/1/mountinfo | awk '{print "mount: " $5}'
  [ -z "$RUNC_ROOT_EXISTED" ] && [ -e /run/runc ] && echo "exists: /run/runc"
  return 0
}

# A time limit on every long step. The command runs in the background and the script waits
# for it, so that a signal to the script is handled at once (bash runs a trap only between
# foreground commands); the trap then ends the command and removes the containers.
CHILD=
bounded() {
  local limit=$1 rc=0
  shift
  timeout -k 30 "$limit" "$@" &
  CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=
  return "$rc"
}

# runc keeps its state in /run/runc (empty once the containers are gone)
RUNC_ROOT_EXISTED=
[ ! -e /run/runc ] || RUNC_ROOT_EXISTED=1
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # pytest is PID 1 in the container and ignores SIGTERM: `podman rm -f` (inside
  # remove_leftovers) kills it, and only then does the podman client return
  [ -z "$CHILD" ] || kill "$CHILD" 2>/dev/null || true
  remove_leftovers
  [ -z "$CHILD" ] || wait "$CHILD" 2>/dev/null || true
  rm -rf "$RUNSTATE"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

BEFORE=$(host_state)

# --- 1. root filesystem (cached) ----------------------------------------------------------
ROOTFS=$BUILD/rootfs
ROOTFS_KEY=$(printf '%s %s %s %s' "$SUITE" "$MIRROR" "$PACKAGES" "$APT_PACKAGES" | sha256sum | cut -c1-16)
if [ "$(cat "$BUILD/rootfs.key" 2>/dev/null)" != "$ROOTFS_KEY" ]; then
  say "debootstrap $SUITE (minbase + $PACKAGES) into build/container/rootfs"
  rm -rf "$ROOTFS" "$BUILD/rootfs.key"
  t0=$SECONDS
  if ! bounded 900 debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" \
       >"$BUILD/debootstrap.log" 2>&1; then
    tail -20 "$BUILD/debootstrap.log" >&2
    die "debootstrap failed (log: build/container/debootstrap.log)"
  fi
  # no service may start while packages are installed (policy-rc.d says no); /proc only
  # for the installers, in this script's private mount namespace
  printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
  chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
  mount -t proc proc "$ROOTFS/proc"
  if ! bounded 900 chroot "$ROOTFS" sh -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive \
       apt-get install -y -q --no-install-recommends $APT_PACKAGES" >"$BUILD/apt.log" 2>&1; then
    umount "$ROOTFS/proc"
    tail -20 "$BUILD/apt.log" >&2
    die "apt-get install $APT_PACKAGES in the root filesystem failed (log: build/container/apt.log)"
  fi
  umount "$ROOTFS/proc"
  rm -f "$ROOTFS/usr/sbin/policy-rc.d"
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
  echo "$ROOTFS_KEY" >"$BUILD/rootfs.key"
  say "root filesystem ready in $((SECONDS - t0)) s"
else
  say "root filesystem: cached"
fi

# --- 2. wheelhouse (cached) ---------------------------------------------------------------
# Wheels for the container's Python, whatever the host's Python is.
PYTAG=$(chroot "$ROOTFS" python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
GLIBC=$(chroot "$ROOTFS" python3 -c 'import platform; print(platform.libc_ver()[1].replace(".", "_"))')
ARCH=$(chroot "$ROOTFS" uname -m)
WHEELS=$BUILD/wheels
HOST_PY=$ROOT/.venv/bin/python
[ -x "$HOST_PY" ] || HOST_PY=python3
REQS=$("$HOST_PY" - "$ROOT/pyproject.toml" <<'EOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = project["dependencies"] + project["optional-dependencies"]["test"]
print("\n".join(reqs + ["setuptools>=61", "wheel"]))
EOF
)
WHEELS_KEY=$(printf '%s\n%s %s %s\n' "$REQS" "$PYTAG" "$GLIBC" "$ARCH" | sha256sum | cut -c1-16)
if [ "$(cat "$BUILD/wheels.key" 2>/dev/null)" != "$WHEELS_KEY" ]; then
  say "pip download: wheels for CPython $PYTAG, manylinux_${GLIBC}_$ARCH, into build/container/wheels"
  rm -rf "$WHEELS" "$BUILD/wheels.key"
  mkdir -p "$WHEELS"
  printf '%s\n' "$REQS" >"$WHEELS/requirements.txt"
  # pip does not widen manylinux_2_N to older glibc versions by itself: list them all
  platforms=()
  for ((minor = ${GLIBC#2_}; minor >= 17; minor--)); do platforms+=(--platform "manylinux_2_${minor}_$ARCH"); done
  platforms+=(--platform "manylinux2014_$ARCH")
  if ! bounded 600 "$HOST_PY" -m pip download -q --disable-pip-version-check -d "$WHEELS" \
       --only-binary=:all: --implementation cp --python-version "$PYTAG" --abi "cp${PYTAG/./}" \
       "${platforms[@]}" -r "$WHEELS/requirements.txt" >"$BUILD/pip-download.log" 2>&1; then
    grep -v '^WARNING: Location' "$BUILD/pip-download.log" | tail -20 >&2
    die "pip download failed (log: build/container/pip-download.log)"
  fi
  echo "$WHEELS_KEY" >"$BUILD/wheels.key"
else
  say "wheelhouse: cached"
fi

# --- 3. image (cached in build/container/storage) ----------------------------------------
WHEEL_LIST_KEY=$( (echo "$ROOTFS_KEY"; ls "$WHEELS") | sha256sum | cut -c1-16)
IMAGE=$IMAGE_REPO:$WHEEL_LIST_KEY
if ! pm image exists "$IMAGE"; then
  say "building image $IMAGE (podman import, then the venv from the wheelhouse, no network)"
  t0=$SECONDS
  BASE=localhost/hyperplane-rootfs:$ROOTFS_KEY
  pm image exists "$BASE" || \
    tar -C "$ROOTFS" -c . | timeout 600 "${PODMAN[@]}" import -q --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  bounded 600 "${PODMAN[@]}" run --name "$RUN_ID-venv" "${RUN_OPTS[@]}" -v "$WHEELS:/wheels:ro" "$BASE" \
    sh -c 'python3 -m venv /opt/venv &&
           /opt/venv/bin/pip install -q --no-index --find-links /wheels -r /wheels/requirements.txt' \
    || die "installing the wheelhouse inside the container failed"
  timeout 300 "${PODMAN[@]}" commit -q --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'WORKDIR /hyperplane' "$RUN_ID-venv" "$IMAGE" >/dev/null
  pm rm "$RUN_ID-venv" >/dev/null
  # Older images (a previous key) are dropped so the cache does not grow.
  for old in $(pm images --format '{{.Repository}}:{{.Tag}}' | grep -E '^localhost/hyperplane-' || true); do
    [ "$old" = "$IMAGE" ] || [ "$old" = "$BASE" ] || pm rmi -f "$old" >/dev/null 2>&1 || true
  done
  say "image ready in $((SECONDS - t0)) s"
else
  say "image $IMAGE: cached"
fi

# --- 4. negative control: no --privileged, no namespace ------------------------------------
say "negative control: the same image without --privileged must not be able to run 'ip netns add'"
set +e
control_out=$(timeout 120 "${PODMAN[@]}" run --name "$RUN_ID-control" --rm "${RUN_OPTS[@]}" "$IMAGE" \
  sh -c 'ip -V >/dev/null || exit 100; ip netns add hp-probe' 2>&1)
control_rc=$?
set -e
case $control_rc in
  0) die "negative control: 'ip netns add' succeeded in an unprivileged container" ;;
  100|124|125|126|127) die "negative control could not run (exit $control_rc): $control_out" ;;
esac
say "negative control ok: exit $control_rc: $(echo "$control_out" | tail -1)"

# --- 5. the suite, privileged, no network -------------------------------------------------
SRC=$BUILD/src
rm -rf "$SRC" "$BUILD/results"
mkdir -p "$SRC" "$BUILD/results"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # the working tree as it is (uncommitted changes too), minus what .gitignore ignores
  git -C "$ROOT" ls-files -z -co --exclude-standard |
    tar -C "$ROOT" --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -C "$SRC" -xf -
else
  tar -C "$ROOT" --exclude=./build --exclude=./.venv --exclude=__pycache__ --exclude='*.egg-info' \
      --exclude=.pytest_cache --exclude=.ruff_cache --exclude=.hypothesis -cf - . | tar -C "$SRC" -xf -
fi
HOST_NETNS_INODE=$(stat -L -c %i /proc/self/ns/net)
say "running the suite in a privileged container (--network none, timeout ${SUITE_TIMEOUT}s)"
t0=$SECONDS
set +e
# shellcheck disable=SC2016
bounded "$SUITE_TIMEOUT" "${PODMAN[@]}" run --name "$RUN_ID-suite" --privileged "${RUN_OPTS[@]}" \
  -e HYPERPLANE_IN_CONTAINER=1 -e HYPERPLANE_HOST_NETNS_INODE="$HOST_NETNS_INODE" \
  -e PYTEST_ARGS="${PYTEST_ARGS:-}" \
  -v "$SRC:/hyperplane" -v "$BUILD/results:/results" -w /hyperplane "$IMAGE" \
  bash -c 'set -e
    pip install -q --no-index --no-deps --no-build-isolation -e /hyperplane >/results/pip.log 2>&1 ||
      { cat /results/pip.log; exit 3; }
    # PYTEST_ARGS is shell words, as in the Makefile: -k "a or b" stays one argument
    eval "set -- $PYTEST_ARGS"
    exec pytest -q -rfEs -p no:cacheprovider --junitxml=/results/junit.xml \
      tests/unit tests/integration "$@"'
suite_rc=$?
set -e
remove_leftovers
say "suite finished in $((SECONDS - t0)) s with exit $suite_rc"

# --- results --------------------------------------------------------------------------------
[ -s "$BUILD/results/junit.xml" ] || die "no JUnit XML came out of the container (exit $suite_rc)"
summary=$("$HOST_PY" - "$BUILD/results/junit.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
total = sum(int(s.get("tests", 0)) for s in suites)
failed = sum(int(s.get("failures", 0)) for s in suites)
errors = sum(int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
proof = [c for c in root.iter("testcase") if c.get("classname", "").endswith("test_container")]
proof_ok = bool(proof) and all(len(c) == 0 for c in proof)  # no skipped/failure/error child
print(total, total - failed - errors - skipped, failed, errors, skipped, len(proof), int(proof_ok))
EOF
)
read -r total passed failed errors skipped nproof proof_ok <<<"$summary"
say "inside the container: $total tests ran: $passed passed, $failed failed, $errors errors, $skipped skipped (JUnit: build/container/results/junit.xml)"
problems=()
[ "$suite_rc" = 0 ] || problems+=("the suite failed inside the container (exit $suite_rc)")
if [ "$proof_ok" = 1 ]; then
  say "proof of place: $nproof test_container checks passed (in a container, in its own network namespace)"
else
  problems+=("tests/integration/test_container.py did not pass inside the container ($nproof cases)")
fi

# --- 6. nothing changed on the host ----------------------------------------------------------
left=$(pm ps -a --format '{{.Names}}')
[ -z "$left" ] || problems+=("containers left in build/container/storage: $left")
AFTER=$(host_state)
if [ "$BEFORE" = "$AFTER" ]; then
  say "host unchanged: firewall, forwarding, /run/netns, root links; no container, cgroup, mount or podman storage left outside build/"
else
  diff <(echo "$BEFORE") <(echo "$AFTER") >&2 || true
  problems+=("the host changed during the run (above: < before, > after)")
fi
for problem in "${problems[@]}"; do printf 'test-container: FAIL: %s\n' "$problem" >&2; done
say "done in $((SECONDS - START)) s"
# the closing line, in the plain form CI reads
echo "test-container: $passed passed, $((failed + errors)) failed, $skipped skipped"
[ "${#problems[@]}" = 0 ]
