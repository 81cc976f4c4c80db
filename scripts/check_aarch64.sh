#!/usr/bin/env bash
# Check edge-asr on the Raspberry Pi's architecture (aarch64) from an x86 Linux machine.
#
# Builds the runtime wheel, downloads aarch64 wheels of its dependencies for CPython 3.11 (what Debian
# bookworm arm64 and 64-bit Raspberry Pi OS ship), installs them into an arm64 Debian bookworm userland
# run under qemu user-mode emulation, then runs `edge-asr file` on a sample with each graph of the bundle
# (fp32, int8), `edge-asr devices` and `edge-asr bench --quick` there, and compares the transcripts with
# the ones this machine produces. Emulated speed means nothing
# for a Pi (20-550x slower than native); this proves the package installs and gives the same text.
#
# Needs root (debootstrap, chroot) and Debian's qemu-user-static binfmt-support debootstrap packages.
# The rootfs (~600 MB) and wheels are cached under $EDGE_ASR_AARCH64_CACHE (default
# build/aarch64-cache in the repository, which git ignores). Not run in CI.
#
# Usage: scripts/check_aarch64.sh --model BUNDLE_DIR --audio FILE [--rebuild-rootfs]
#   --model defaults to the package's default bundle (edge_asr/models/default) when there is one;
#   --audio defaults to the first .wav file inside the bundle folder.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${EDGE_ASR_AARCH64_CACHE:-$REPO/build/aarch64-cache}
SUITE=bookworm
PYVER=3.11
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOTFS=$CACHE/rootfs-$SUITE-arm64
WHEELS=$CACHE/wheels-cp311-aarch64
MODEL=""
AUDIO=""
REBUILD=0

die() { echo "check_aarch64: error: $*" >&2; exit 2; }
step() { echo; echo "== $* ($(date +%T))"; }

while [ $# -gt 0 ]; do
    case $1 in
        --model) MODEL=$2; shift 2 ;;
        --audio) AUDIO=$2; shift 2 ;;
        --rebuild-rootfs) REBUILD=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

[ "$(id -u)" = 0 ] || die "run as root: debootstrap and chroot need it"
for tool in debootstrap chroot qemu-aarch64-static; do
    command -v "$tool" >/dev/null || die "$tool not found: apt-get install qemu-user-static binfmt-support debootstrap"
done
if [ -z "$MODEL" ]; then
    MODEL=$REPO/edge_asr/models/default
    [ -f "$MODEL/bundle.json" ] || die "no default model is bundled yet: pass --model BUNDLE_DIR"
fi
[ -f "$MODEL/bundle.json" ] || die "$MODEL is not a model bundle (bundle.json missing)"
MODEL=$(cd "$MODEL" && pwd)
if [ -z "$AUDIO" ]; then
    AUDIO=$(find "$MODEL" -maxdepth 2 -name '*.wav' | sort | head -n1)
    [ -n "$AUDIO" ] || die "the bundle holds no .wav sample: pass --audio FILE"
fi
[ -f "$AUDIO" ] || die "$AUDIO: no such audio file"

# binfmt_misc makes the kernel hand aarch64 executables to qemu.
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable qemu-aarch64
fi
grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "binfmt entry qemu-aarch64 is disabled"

mkdir -p "$CACHE"
cleanup_mounts() {
    if mountpoint -q "$ROOTFS/proc" 2>/dev/null; then umount "$ROOTFS/proc" || true; fi
}
trap cleanup_mounts EXIT

# --- 1. arm64 userland (cached) ------------------------------------------------------------------------
if [ "$REBUILD" = 1 ]; then rm -rf "$ROOTFS"; fi
if [ ! -f "$ROOTFS/.edge-asr-debootstrap-done" ]; then
    step "debootstrap $SUITE arm64 minbase into $ROOTFS (about 2 minutes)"
    rm -rf "$ROOTFS.partial"
    debootstrap --arch=arm64 --foreign --variant=minbase "$SUITE" "$ROOTFS.partial" "$MIRROR"
    chroot "$ROOTFS.partial" /debootstrap/debootstrap --second-stage
    mv "$ROOTFS.partial" "$ROOTFS"
    touch "$ROOTFS/.edge-asr-debootstrap-done"
fi
if [ ! -f "$ROOTFS/.edge-asr-python-done" ]; then
    step "apt-get install python3 python3-venv inside the userland"
    mount -t proc proc "$ROOTFS/proc"
    cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
    chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends python3 python3-venv python3-pip"
    umount "$ROOTFS/proc"
    touch "$ROOTFS/.edge-asr-python-done"
fi
if [ ! -f "$ROOTFS/.edge-asr-portaudio-done" ]; then
    step "apt-get install libportaudio2 inside the userland (for the [mic] extra)"
    mount -t proc proc "$ROOTFS/proc"
    chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        sh -c "apt-get install -y -q --no-install-recommends libportaudio2"
    umount "$ROOTFS/proc"
    touch "$ROOTFS/.edge-asr-portaudio-done"
fi
# onnxruntime segfaults under qemu when it reads the host's CPU topology from /sys (emulated ARM
# plus x86 topology); with /sys empty but for these two files it starts fine.
if mountpoint -q "$ROOTFS/sys"; then umount "$ROOTFS/sys"; fi
mkdir -p "$ROOTFS/sys/devices/system/cpu"
echo 0-1 >"$ROOTFS/sys/devices/system/cpu/possible"
echo 0-1 >"$ROOTFS/sys/devices/system/cpu/present"
chroot "$ROOTFS" /usr/bin/python3 -c "import platform; print('emulated:', platform.machine(), platform.python_version())"

# --- 2. wheels -----------------------------------------------------------------------------------------
step "build the edge-asr wheel"
DIST=$(mktemp -d)
trap 'cleanup_mounts; rm -rf "$DIST"' EXIT
(cd "$REPO" && python -m pip wheel --no-deps --no-build-isolation -q -w "$DIST" .)
WHEEL=$(ls "$DIST"/edge_asr-*.whl)
echo "$(basename "$WHEEL") ($(du -h "$WHEEL" | cut -f1))"

step "download aarch64 wheels for CPython $PYVER into $WHEELS"
python -m pip download -q --only-binary=:all: --implementation cp --python-version "$PYVER" \
    --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux_2_28_aarch64 \
    -d "$WHEELS" "$WHEEL[mic]"
rm -f "$WHEELS"/edge_asr-*.whl  # the fresh build is copied in below; never a stale one
ls "$WHEELS"

# --- 3. install and run inside ---------------------------------------------------------------------------
step "install into a venv inside the userland"
rm -rf "$ROOTFS/opt/edge-asr-check"
mkdir -p "$ROOTFS/opt/edge-asr-check/wheels"
cp "$WHEELS"/*.whl "$WHEEL" "$ROOTFS/opt/edge-asr-check/wheels/"
cp -r "$MODEL" "$ROOTFS/opt/edge-asr-check/model"
cp "$AUDIO" "$ROOTFS/opt/edge-asr-check/sample.${AUDIO##*.}"
SAMPLE=/opt/edge-asr-check/sample.${AUDIO##*.}
inside() {
    chroot "$ROOTFS" /usr/bin/env -i PATH=/opt/edge-asr-check/venv/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 "$@"
}
time inside sh -c "python3 -m venv /opt/edge-asr-check/venv && \
    pip install -q --no-index --find-links /opt/edge-asr-check/wheels 'edge-asr[mic]' && \
    pip list --format=freeze | grep -iE '^(edge-asr|numpy|onnxruntime|soundfile|soxr|sounddevice)=='"

VARIANTS=$(python -c "import json,sys; print(' '.join(v for v in ('fp32', 'int8') if v in json.load(open(sys.argv[1]))['models']))" "$MODEL/bundle.json")
FAILED=""
for VARIANT in $VARIANTS; do
    FLAG=""
    if [ "$VARIANT" = fp32 ]; then FLAG=--fp32; fi
    step "edge-asr file $FLAG ($VARIANT) on x86, this machine"
    X86_TEXT=$(cd "$REPO" && time python -m edge_asr file $FLAG --model "$MODEL" "$AUDIO")
    step "edge-asr file $FLAG ($VARIANT) on emulated aarch64"
    ARM_TEXT=$(time inside edge-asr file $FLAG --model /opt/edge-asr-check/model "$SAMPLE")
    echo "x86:     $X86_TEXT"
    echo "aarch64: $ARM_TEXT"
    if [ "$X86_TEXT" = "$ARM_TEXT" ]; then
        echo "$VARIANT: SAME transcript"
    else
        FAILED="$FAILED $VARIANT"
        python -c "import difflib,sys; print('$VARIANT: DIFFERENT transcript, similarity %.3f' % difflib.SequenceMatcher(None, sys.argv[1], sys.argv[2], autojunk=False).ratio())" "$X86_TEXT" "$ARM_TEXT"
    fi
done

step "edge-asr devices on emulated aarch64 (the [mic] extra and libportaudio2 load; no sound card here)"
inside edge-asr devices || true

step "edge-asr bench --quick on emulated aarch64 (emulated timings: sanity only)"
time inside edge-asr bench --quick --model /opt/edge-asr-check/model --json /opt/edge-asr-check/bench.json
cp "$ROOTFS/opt/edge-asr-check/bench.json" "$CACHE/bench-aarch64-emulated.json"
echo "JSON copied to $CACHE/bench-aarch64-emulated.json"

echo
if [ -z "$FAILED" ]; then
    echo "OK: the aarch64 transcripts ($VARIANTS) equal the x86 ones"
else
    echo "MISMATCH ($FAILED): aarch64 and x86 transcripts differ. int8 kernels differ between x86 and ARM," >&2
    echo "so frames where two letters score almost the same (common with untrained weights) can flip." >&2
    exit 1
fi
