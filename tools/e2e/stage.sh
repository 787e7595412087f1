#!/bin/bash
# Stages what the end-to-end run needs on a GPU box that has Python, torch and transformers but
# not this project's C++ dependencies: tierkvd and tierkvctl with the shared libraries they need
# beyond glibc and libstdc++ (from ldd), the Python module `tierkv` (built with CUDA, for the
# box's Python), the script (with tierkvd_process.py, which it imports) and the device-side runner.
#
#   bash tools/e2e/stage.sh BUILD_DIR DEST [TIERKVD]
#
# TIERKVD, if given, is staged instead of BUILD_DIR's tierkvd (a daemon built from another tree).
#
# BUILD_DIR is a Release build with CUDA and the Python module for the box's Python version, e.g.
#   cmake -S . -B build/e2e-release -G Ninja -DCMAKE_BUILD_TYPE=Release -DTIERKV_BUILD_TESTS=OFF \
#     -DCMAKE_CUDA_ARCHITECTURES=90 -DPython3_EXECUTABLE=/path/to/python3.12 \
#     -Dpybind11_DIR=$(/path/to/python3.12 -m pybind11 --cmakedir)
#   cmake --build build/e2e-release --target tierkvd tierkvctl tierkv_python
set -euo pipefail
build=${1:?usage: stage.sh BUILD_DIR DEST [TIERKVD]}
dest=${2:?usage: stage.sh BUILD_DIR DEST [TIERKVD]}
tierkvd=${3:-$build/daemon/tierkvd}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dest/bin" "$dest/lib" "$dest/py"
cp "$tierkvd" "$build/tools/tierkvctl" "$dest/bin/"
{
  echo "staged $(date -u +%FT%TZ) from $(git -C "$here" rev-parse HEAD)$(git -C "$here" diff --quiet HEAD -- . || echo ' (tools/e2e modified)')"
  echo "module and tierkvctl: $build"
  echo "tierkvd: $tierkvd"
  src=$(dirname "$(dirname "$(dirname "$tierkvd")")")
  if [ -f "$src/MERGED_FROM" ]; then echo "tierkvd source: $(cat "$src/MERGED_FROM")"; fi
} > "$dest/BUILD_INFO"
cp "$build"/python/tierkv*.so "$dest/py/"
cp "$here/e2e_run.py" "$here/tierkvd_process.py" "$here/run_device.sh" "$dest/"
# Shared libraries beyond the C and C++ runtimes, which the box has (newer) itself.
for f in "$dest/bin/tierkvd" "$dest/bin/tierkvctl" "$dest"/py/tierkv*.so; do
  ldd "$f" | awk '/=> \//{print $3}'
done | sort -u | grep -vE '/(libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so' |
  while read -r lib; do cp -L "$lib" "$dest/lib/"; done
strip --strip-unneeded "$dest"/bin/* "$dest"/py/*.so "$dest"/lib/*.so* 2>/dev/null || true
echo "staged into $dest:"
du -sh "$dest"/* | sed 's/^/  /'
ldd "$dest"/py/tierkv*.so | sed 's/^/  module needs: /'
