#!/usr/bin/env bash
# The whole test suite on a fresh machine: environment, system packages, real servers (started by the
# fixtures), every test. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash packaging/setup-env.sh --test
echo "setup: $(( $(date +%s) - start )) s"
for lib in /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \
           /usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0; do
  # Same BLAS as the app uses on Linux (lemcore.blas preloads it for `lem` and `lem-desktop`).
  [ -e "$lib" ] && export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}" && break
done
export QT_QPA_PLATFORM=offscreen
.venv/bin/python -m pytest -q "$@"
