#!/usr/bin/env bash
# Builds the debug preset (AddressSanitizer + UndefinedBehaviorSanitizer) and runs every test.
# Extra arguments go to ctest, e.g. `tools/test.sh -R PagedKv`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash tools/install-deps.sh

echo "==> Configuring (debug preset: ASan + UBSan)"
cmake --preset debug
echo "==> Building with $(nproc) jobs"
cmake --build --preset debug -j"$(nproc)"
echo "==> Running the tests"
ctest --preset debug -j"$(nproc)" "$@"
echo "==> All tests passed"
