#!/usr/bin/env bash
# An arm64 Debian userland under qemu user-mode emulation, for proving the runtime's parity on ARM
# without ARM hardware (../README.md, "ARM"). Called by `./edge arm ...`:
#   setup            build the root once (outside the repository; ~15 min from nothing, ~1.2 GB) and
#                    install edgeinfer there (its C kernel built by the arm64 gcc); reused afterwards
#   test [CPU...]    setup, then the arm64 parity suite (tests/arm64/parity.py) under each QEMU_CPU
#                    (default: cortex-a72 cortex-a76), then the engines' parity under cortex-a76; writes
#                    benchmarks/arm64_parity.json (--engines-only: only the engines' key)
#   shell            an interactive shell inside (QEMU_CPU from the environment, default cortex-a76)
#   run CMD...       one command inside, e.g. `./edge arm run edgeinfer devices`
# Where: EDGEINFER_ARM_ROOT (default ~/.cache/edgeinfer/arm64-root). Mirror: EDGEINFER_ARM_MIRROR.
#
# Nothing global changes on the host: binfmt_misc is mounted and qemu registered inside a private user
# and mount namespace (Linux >= 6.7 allows binfmt_misc per user namespace), which ends with the command.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ROOT="${EDGEINFER_ARM_ROOT:-$HOME/.cache/edgeinfer/arm64-root}"
MIRROR="${EDGEINFER_ARM_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
QEMU=/usr/bin/qemu-aarch64-static
BINFMT=/usr/share/binfmts/qemu-aarch64
LOG="$ROOT.log"
# The Python packages inside, pinned to what the x86 reference machine runs (benchmarks/arm64_parity.json
# records both sides' versions).
# onnx: `edgeinfer tune`/`quantize` on the device write variants with it.
PIP_PACKAGES="numpy==2.4.6 onnxruntime==1.32.0 opencv-python-headless==5.0.0.93 onnx==1.23.2 setuptools>=77 wheel"
# The engines beside ONNX Runtime (edgeinfer.engines, issue 26), pinned to the x86 machine's versions, as aarch64
# wheels only (--only-binary=:all:, their dependencies too): compiling one under qemu would take hours, so a
# package without an aarch64 wheel is said, not built. What each install gave is written into the root
# (ENGINE_RECORDS, one file per package) and carried into benchmarks/arm64_parity.json by the engine parity.
ENGINE_PACKAGES="openvino==2026.4.1 ncnn==1.0.20261020 ai-edge-litert==2.3.0"
ENGINE_RECORDS=/opt/venv/edgeinfer-engines

die() { echo "edge arm: $*" >&2; exit 1; }

# What is needed, said once and clearly, before anything is touched.
check_host() {
  local missing=()
  [ "$(uname -m)" = x86_64 ] || [ "$(uname -m)" = aarch64 ] \
    || missing+=("an x86-64 (or arm64) host; found $(uname -m)")
  [ "$(id -u)" = 0 ] || missing+=("root (the root's files are owned by uids 0..65535, mapped 1:1 into a user namespace); run as root, e.g. in a container or CI job")
  local kv; kv="$(uname -r)"; local major="${kv%%.*}" rest="${kv#*.}"; local minor="${rest%%[.-]*}"
  if [ "$major" -lt 6 ] || { [ "$major" -eq 6 ] && [ "$minor" -lt 7 ]; }; then
    missing+=("Linux >= 6.7 (binfmt_misc inside a user namespace); found $kv")
  fi
  [ -x "$QEMU" ] && [ -f "$BINFMT" ] || missing+=("qemu-user-static: apt-get install qemu-user-static")
  command -v debootstrap >/dev/null || missing+=("debootstrap: apt-get install debootstrap")
  command -v unshare >/dev/null || missing+=("unshare (util-linux)")
  if [ ${#missing[@]} -gt 0 ]; then
    echo "edge arm: this host cannot run the arm64 root yet; it needs:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    echo "  (nothing global is changed: no system binfmt_misc registration is made or needed)" >&2
    exit 3
  fi
}

# A /proc/cpuinfo for the emulated core: ONNX Runtime's CPU detection (pytorch/cpuinfo) segfaults on
# the host's x86 text. MIDR part numbers and feature lists as the Linux kernel prints them on that core.
write_cpuinfo() {
  local cpu="$1" out="$2" part features
  case "$cpu" in
    cortex-a72) part=0xd08; features="fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid" ;;
    cortex-a76) part=0xd0b; features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
    neoverse-n1) part=0xd0c; features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs" ;;
    *) part=0xd0c; features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
  esac
  : > "$out"
  for i in 0 1 2 3; do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: %s\nCPU revision\t: 1\n\n' \
      "$i" "$features" "$part" >> "$out"
  done
}

# Runs "$@" inside the root: a user namespace mapping uids 0..65535 onto the same host uids (so the
# root's files keep their owners), a private mount namespace, a private binfmt_misc with qemu-aarch64
# registered (flag F: the interpreter is opened now, so it need not exist inside the root).
inside() {
  local cpu="${QEMU_CPU:-cortex-a76}"
  local cpuinfo="$ROOT.cpuinfo-$cpu"
  write_cpuinfo "$cpu" "$cpuinfo"
  local magic mask
  magic="$(sed -n 's/^magic //p' "$BINFMT")"
  mask="$(sed -n 's/^mask //p' "$BINFMT")"
  # The child waits until the parent has written its uid/gid maps (until then it is "nobody").
  unshare --user --mount --fork -- env EA_ROOT="$ROOT" EA_QEMU="$QEMU" EA_MAGIC="$magic" EA_MASK="$mask" \
      EA_CPUINFO="$cpuinfo" EA_CPU="$cpu" EA_REPO="$REPO" bash -c '
    set -e
    for _ in $(seq 200); do [ "$(id -u)" = 0 ] && break; sleep 0.05; done
    [ "$(id -u)" = 0 ] || { echo "edge arm: the user namespace was not mapped" >&2; exit 1; }
    mount --make-rprivate /
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    echo ":qemu-aarch64:M:0:$EA_MAGIC:$EA_MASK:$EA_QEMU:FOC" > /proc/sys/fs/binfmt_misc/register
    R="$EA_ROOT"
    mount --rbind /proc "$R/proc"
    mount --rbind /sys "$R/sys"
    mount --rbind /dev "$R/dev"
    mount -t tmpfs tmpfs "$R/dev/shm"
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts"
    mount --bind "$EA_CPUINFO" "$R/proc/cpuinfo"
    mkdir -p "$R/src/edgeinfer"
    mount --bind "$EA_REPO" "$R/src/edgeinfer"
    exec env -i HOME=/root TERM="${TERM:-dumb}" PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      LANG=C.UTF-8 QEMU_CPU="$EA_CPU" EDGEINFER_EMULATOR="qemu-user:$EA_CPU" \
      PIP_CERT=/etc/ssl/certs/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
      ${EA_EXTRA_ENV:-} chroot "$R" "$@"
  ' edge-arm "$@" 0<&0 &
  local pid=$!
  for _ in $(seq 200); do
    [ -e "/proc/$pid/uid_map" ] && [ "$(readlink "/proc/$pid/ns/user")" != "$(readlink /proc/self/ns/user)" ] && break
    sleep 0.02
  done
  echo "0 0 65536" > "/proc/$pid/uid_map"
  echo "0 0 65536" > "/proc/$pid/gid_map"
  local rc=0
  wait "$pid" || rc=$?
  return "$rc"
}

stage() {  # stage NAME: true when NAME is not done yet
  [ ! -f "$ROOT/.edge-arm-$1" ]
}
done_stage() { touch "$ROOT/.edge-arm-$1"; }

step() {
  local what="$1"; shift
  echo "edge arm: $what (log: $LOG)" >&2
  local t0=$SECONDS
  "$@" >>"$LOG" 2>&1 || { echo "edge arm: failed: $what; the end of $LOG:" >&2; tail -n 30 "$LOG" >&2; exit 1; }
  echo "edge arm:   done in $((SECONDS - t0)) s" >&2
}

first_stage() {
  rm -rf "$ROOT"
  mkdir -p "$(dirname "$ROOT")"
  debootstrap --arch=arm64 --foreign --variant=minbase "$SUITE" "$ROOT" "$MIRROR"
  # In a container debootstrap makes proc a symlink to the host's /proc; the namespace mounts one.
  rm -rf "$ROOT/proc"; mkdir "$ROOT/proc"
}

setup_root() {
  check_host
  mkdir -p "$(dirname "$ROOT")"
  if [ ! -f "$ROOT/.edge-arm-first" ]; then
    : > "$LOG"
    step "debootstrap, first stage ($SUITE arm64 from $MIRROR into $ROOT)" first_stage
    done_stage first
  fi
  if stage second; then
    # container=lxc: debootstrap skips device nodes and its noexec/nodev probe (a user namespace may not mknod).
    EA_EXTRA_ENV="container=lxc" step "debootstrap, second stage (emulated; ~4 min)" inside /debootstrap/debootstrap --second-stage
    done_stage second
  fi
  if stage apt; then
    cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/host-ca.crt" 2>/dev/null \
      || { mkdir -p "$ROOT/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/host-ca.crt"; }
    step "apt: python3, venv, gcc (emulated; ~6 min)" inside sh -c \
      'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 python3-venv python3-dev gcc libc6-dev && apt-get clean'
    done_stage apt
  fi
  if stage venv; then
    step "venv (emulated)" inside sh -c 'python3 -m venv /opt/venv && /opt/venv/bin/python -m pip install -q --upgrade pip'
    # one argument per requirement: no shell sees "setuptools>=77"
    # shellcheck disable=SC2086
    step "aarch64 wheels: $PIP_PACKAGES (~2 min)" inside /opt/venv/bin/python -m pip install -q $PIP_PACKAGES
    done_stage venv
  fi
  for req in $ENGINE_PACKAGES; do
    stage "engine-${req%%==*}" && install_engine "$req"
  done
  install_edgeinfer
}

# install_engine REQUIREMENT: its aarch64 wheel from PyPI into the venv, timed, with what came with it; a failure
# (no aarch64 wheel for this Python and glibc) is recorded and said, and setup goes on without that engine.
install_engine() {
  local req="$1" name="${1%%==*}" t0=$SECONDS rc=0 out
  echo "edge arm: engine $req: its aarch64 wheel (--only-binary=:all:, emulated pip) (log: $LOG)" >&2
  mkdir -p "$ROOT$ENGINE_RECORDS"
  out="$(inside sh -c '
    set -e; W=/tmp/edge-arm-wheel; rm -rf "$W"; mkdir -p "$W"
    /opt/venv/bin/python -m pip list --format=freeze > /tmp/edge-arm-before.txt
    /opt/venv/bin/python -m pip download -q --only-binary=:all: --no-deps -d "$W" "$1"
    /opt/venv/bin/python -m pip install -q --only-binary=:all: "$W"/*.whl
    /opt/venv/bin/python -m pip list --format=freeze > /tmp/edge-arm-after.txt
    for f in "$W"/*.whl; do echo "wheel: $(basename "$f") $(stat -c %s "$f")"; done
    echo "new: $(grep -vxFf /tmp/edge-arm-before.txt /tmp/edge-arm-after.txt | tr "\n" " ")"
    rm -rf "$W"' edge-arm-engine "$req" 2>&1)" || rc=$?
  printf '%s\n' "$out" >> "$LOG"
  {
    echo "requirement: $req"
    echo "seconds: $((SECONDS - t0))"
    if [ "$rc" = 0 ]; then
      echo "status: installed"
      printf '%s\n' "$out" | grep -E '^(wheel|new): '
    else
      echo "status: failed (pip --only-binary=:all: exit $rc)"
      printf '%s\n' "$out" | grep -E 'ERROR' | sed 's/^/error: /' | tail -n 3
    fi
  } > "$ROOT$ENGINE_RECORDS/$name.txt"
  if [ "$rc" = 0 ]; then
    done_stage "engine-$name"
    echo "edge arm:   installed in $((SECONDS - t0)) s" >&2
  else
    echo "edge arm:   no install: $(printf '%s\n' "$out" | grep ERROR | tail -n 1) (setup goes on without it)" >&2
  fi
}

# edgeinfer from this working tree, as a wheel built inside (so its C kernel is compiled by the arm64
# gcc); rebuilt only when the files that go into it change.
install_edgeinfer() {
  local stamp
  # every source file of the wheel, subpackages included (the engines, the pixel code and its C kernel live there)
  stamp="$(cd "$REPO" && find setup.py pyproject.toml edgeinfer devices converters -type f \( -name '*.py' -o -name '*.c' \
    -o -name '*.toml' \) | LC_ALL=C sort | xargs cat | sha1sum | cut -c1-12)"
  if [ ! -f "$ROOT/.edge-arm-edgeinfer-$stamp" ]; then
    rm -f "$ROOT"/.edge-arm-edgeinfer-*
    # A copy, not the mounted tree: the build must not write into the repository (build/, egg-info).
    step "edgeinfer: building its wheel inside (C kernel by the arm64 gcc)" inside sh -c \
      'rm -rf /tmp/edgeinfer-src && mkdir /tmp/edgeinfer-src && cd /src/edgeinfer &&
       tar cf - --exclude="*.so" --exclude=__pycache__ pyproject.toml setup.py README.md edgeinfer devices converters | tar xf - -C /tmp/edgeinfer-src &&
       /opt/venv/bin/python -m pip install -q --no-deps --no-build-isolation --force-reinstall /tmp/edgeinfer-src &&
       cd / && /opt/venv/bin/python -c "import edgeinfer.pipeline._resample as r; print(\"C kernel:\", r.__file__)"'
    touch "$ROOT/.edge-arm-edgeinfer-$stamp"
  fi
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  setup)
    t0=$SECONDS
    setup_root
    echo "edge arm: ready at $ROOT ($((SECONDS - t0)) s)" >&2
    ;;
  test)
    setup_root
    EDGEINFER_ARM_INSTALLED=1 exec "$REPO/.venv/bin/python" "$HERE/suite.py" --arm-sh "$HERE/arm.sh" "$@"
    ;;
  shell)
    check_host
    [ -f "$ROOT/.edge-arm-venv" ] || die "no arm64 root at $ROOT yet: run ./edge arm setup"
    install_edgeinfer
    inside bash -l
    ;;
  run)
    check_host
    [ -f "$ROOT/.edge-arm-venv" ] || die "no arm64 root at $ROOT yet: run ./edge arm setup"
    [ $# -gt 0 ] || die "usage: ./edge arm run CMD [ARGS...]"
    # the suite installed it a moment ago; other engineers' edits since then would only rebuild the same code
    [ -n "${EDGEINFER_ARM_INSTALLED:-}" ] || install_edgeinfer
    inside "$@"
    ;;
  check)
    check_host
    echo "edge arm: host ok; root $( [ -f "$ROOT/.edge-arm-venv" ] && echo "ready at $ROOT" || echo "not built yet ($ROOT)")"
    ;;
  *)
    echo "usage: ./edge arm setup | test [QEMU_CPU...] | shell | run CMD... | check" >&2
    exit 2
    ;;
esac
