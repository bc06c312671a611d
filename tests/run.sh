#!/usr/bin/env bash
# The whole test suite on a fresh machine: environment, system packages, real servers (started by the
# fixtures), every test. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash packaging/setup-env.sh --test
echo "setup: $(( $(date +%s) - start )) s"

# Static checks before any test: lint, types (the [tool.mypy] config in pyproject.toml: strict on lemcore),
# and the import contracts ([tool.importlinter]). A failing one ends the run, saying which.
check() {
  local name=$1 t0
  shift
  t0=$(date +%s)
  if ! "$@"; then
    echo "FAILED: $name ($*)" >&2
    exit 1
  fi
  echo "$name: ok ($(( $(date +%s) - t0 )) s)"
}
check "ruff" .venv/bin/ruff check lemcore app tests
check "mypy" .venv/bin/mypy lemcore app
check "import contracts" .venv/bin/lint-imports

for lib in /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \
           /usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0; do
  # Same BLAS as the app uses on Linux (lemcore.blas preloads it for `lem` and `lem-desktop`).
  [ -e "$lib" ] && export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}" && break
done
export QT_QPA_PLATFORM=offscreen
.venv/bin/python -m pytest -q "$@"
