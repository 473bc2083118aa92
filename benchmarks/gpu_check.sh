#!/usr/bin/env bash
# The GPU check: one prepared script for one H100/H200 with PyTorch and no network (README: "GPU
# check"). It
#   1. installs the project's other dependencies from benchmarks/wheels/ (made beforehand by
#      benchmarks/gpu_wheels.sh where PyPI is reachable) into a venv over the system's packages,
#      unless they are importable already;
#   2. runs the GPU tests (pytest -m gpu: paged FlashAttention against a dense reference, CUDA
#      graphs against eager decoding, a T1 batch on CUDA against the reference tokens);
#   3. profiles the device (seesaw profile --device cuda --quick, LLaMA-3-8B shapes, bf16) into
#      profiles/measured/<h100|h200|...>.yaml (named by the GPU), copied into $OUT;
#   4. runs benchmarks/gpu_bench.py: the engine at T1 on a LLaMA-3-8B-shaped bf16 model with
#      random weights made on the device, decode MBU and prefill MFU against the device's measured
#      copy bandwidth and bf16 GEMM rate, and the simulator's prediction for the same run from
#      the step-3 profile;
#   5. writes $OUT/gpu_check.json (every step's status and figures) and prints it as the last line.
# Every step is time-limited and the check goes on after a failed step; the exit status is 1 if
# any step failed. $OUT: the output folder (default ./gpu_check_out).
#
#   OUT=/path/to/out benchmarks/gpu_check.sh                    # on the GPU machine
#   OUT=/tmp/dry benchmarks/gpu_check.sh --device cpu --tiny    # the same steps on a CPU, small
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
TINY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --tiny) TINY=1; shift ;;
    *) echo "gpu_check: unknown argument $1 (use --device cuda|cpu, --tiny)"; exit 2 ;;
  esac
done
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
START=$(date +%s)
log() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*"; }
export PYTHONUNBUFFERED=1

# 1. dependencies -------------------------------------------------------------------------------
if "$PY" -c "import seesaw.engine.runner, simulator.sim, simpy, pydantic, gguf, pandas, pytest, pytest_timeout" \
    >/dev/null 2>&1; then
  log "dependencies: already importable with $PY"
  DEPS=present
else
  if [ ! -d benchmarks/wheels ]; then
    echo "gpu_check: benchmarks/wheels/ is missing: run benchmarks/gpu_wheels.sh where PyPI is reachable and carry it"
    exit 2
  fi
  VENV=${VENV:-/tmp/seesaw-gpu-venv}
  log "dependencies: installing from benchmarks/wheels/ into $VENV (no network)"
  "$PY" -m venv --system-site-packages "$VENV" &&
    "$VENV/bin/python" -m pip install -q --no-index --find-links benchmarks/wheels \
      -r <("$PY" benchmarks/gpu_deps.py) &&
    "$VENV/bin/python" -m pip install -q --no-index --no-deps --no-build-isolation -e . ||
    { echo "gpu_check: installing the dependencies failed (see above)"; exit 1; }
  PY="$VENV/bin/python"
  DEPS=installed
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# 2. GPU tests ----------------------------------------------------------------------------------
log "GPU tests"
timeout 300 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_attention.py tests/test_engine_gpu.py \
  > "$OUT/gpu_tests.log" 2>&1
TESTS_RC=$?
tail -3 "$OUT/gpu_tests.log"

# 3. profile ------------------------------------------------------------------------------------
if [ "$DEVICE" = cuda ]; then
  NAME=$("$PY" -c "import re, torch; n = torch.cuda.get_device_name().lower(); \
print(next((k for k in ('h200', 'h100', 'a100', 'l4') if k in n), re.sub('[^a-z0-9]+', '-', n).strip('-')))")
  PROFILE=profiles/measured/$NAME.yaml
  PROFILE_ARGS=(--device cuda --model llama3-8b --dtype bfloat16)
else
  PROFILE=$OUT/cpu-dry-run.yaml  # a dry run leaves profiles/ alone
  PROFILE_ARGS=(--device cpu --model tiny --dtype float32)
fi
log "profile -> $PROFILE"
timeout 240 "$PY" -m seesaw.cli profile -o "$PROFILE" "${PROFILE_ARGS[@]}" --quick --tp 1 --ranks 1 --json \
  > "$OUT/profile.log" 2>&1
PROFILE_RC=$?
tail -2 "$OUT/profile.log"
[ -f "$PROFILE" ] && [ "$PROFILE" != "$OUT/$(basename "$PROFILE")" ] && cp "$PROFILE" "$OUT/"

# 4. the engine and the simulator ---------------------------------------------------------------
log "engine at T1 (gpu_bench.py)"
BENCH_ARGS=(--device "$DEVICE" --out "$OUT")
[ "$TINY" = 1 ] && BENCH_ARGS+=(--tiny)
[ "$PROFILE_RC" = 0 ] && BENCH_ARGS+=(--profile "$PROFILE")
timeout 300 "$PY" benchmarks/gpu_bench.py "${BENCH_ARGS[@]}" > "$OUT/gpu_bench.log" 2>&1
BENCH_RC=$?
grep -v '^{' "$OUT/gpu_bench.log" | tail -8

# 5. summary ------------------------------------------------------------------------------------
"$PY" - "$OUT" "$TESTS_RC" "$PROFILE_RC" "$BENCH_RC" "$PROFILE" "$DEPS" "$(( $(date +%s) - START ))" <<'EOF'
import json, re, sys
from pathlib import Path

out, tests_rc, profile_rc, bench_rc, profile, deps, elapsed = sys.argv[1:]
log = (Path(out) / "gpu_tests.log").read_text(errors="replace")
counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", log.splitlines()[-1] if log else "")}
bench = Path(out) / "gpu_bench.json"
summary = {
    "ok": tests_rc == "0" and profile_rc == "0" and bench_rc == "0",
    "elapsed_s": int(elapsed), "dependencies": deps,
    "gpu_tests": {"rc": int(tests_rc), **counts},
    "profile": {"rc": int(profile_rc), "path": profile},
    "bench": {"rc": int(bench_rc), **(json.loads(bench.read_text()) if bench.exists() else {})},
}
(Path(out) / "gpu_check.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary))
sys.exit(0 if summary["ok"] else 1)
EOF
