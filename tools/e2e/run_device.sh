#!/bin/bash
# Runs the end-to-end check from a folder made by stage.sh, on the GPU box. Writes the whole log,
# the JSON results and tierkvd's log to $OUT (default: ./out). Extra arguments go to e2e_run.py.
set -uo pipefail
D=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$D/out}
mkdir -p "$OUT"
# tierkvd's libraries are set for tierkvd alone: the interpreter keeps the system's own.
cat > "$D/bin/tierkvd-env" <<EOF
#!/bin/sh
LD_LIBRARY_PATH="$D/lib" exec "$D/bin/tierkvd" "\$@"
EOF
chmod +x "$D/bin/tierkvd-env"
export PYTHONPATH="$D/py${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
  cat "$D/BUILD_INFO" 2>/dev/null
  nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.max,pcie.link.width.max --format=csv
  echo "cpus $(nproc); memlock $(ulimit -l)"; free -g | head -2; df -h "$D" /tmp /var/tmp | uniq
  python3 -c 'import tierkv, torch, transformers; print("tierkv", tierkv.__version__, "cuda_built", tierkv.CUDA_BUILT, "gpu_transfer", tierkv.GPU_TRANSFER, "torch", torch.__version__, "transformers", transformers.__version__)'
} 2>&1 | tee "$OUT/env.txt"
python3 "$D/e2e_run.py" --tierkvd "$D/bin/tierkvd-env" --json-out "$OUT/e2e.json" \
  --keep-log "$OUT/tierkvd.log" "$@" 2>&1 | tee "$OUT/e2e.log"
exit "${PIPESTATUS[0]}"
