#!/usr/bin/env bash
# The GPU checks a CPU-only session cannot run, as one command on a lent GPU machine:
# the kernel tests at real sizes (pytest -m gpu) and the kernel benchmarks beside their peers
# (flash-linear-attention when it imports; mamba_ssm when it is built there).
#
#   bash bench/gpu_checks.sh OUT_DIR
#
# Runs from the repository root with the machine's python3 (torch, Triton, pytest there);
# wheels in .whl/ (jsonargparse, fla) are installed into /tmp/site first. Each part has its
# own time limit (GPU_TEST_S, BENCH_OP_S seconds) and the results so far are packed into
# OUT_DIR/results.tgz after each, so a run cut short still returns what it measured.
# Measured on an H200 (2026-12-04): the tests take ~45 s; the selective scan's bench ~100 s;
# retention, linear_recurrence and lif did not finish in 55-110 s each (hence 180 s each).
# A 15-minute lease fits the tests and two or three ops: name them with BENCH_OPS.
set -uo pipefail
out="${1:?usage: bench/gpu_checks.sh OUT_DIR}"
res=/tmp/gpu_checks
mkdir -p "$out" "$res"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
pack() { tar czf "$out/results.tgz" -C "$res" .; }

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
  python3 -c "import fla; print('fla', fla.__version__)" 2>&1 | tail -1
} > "$res/env.txt" 2>&1
pack

timeout "${GPU_TEST_S:-200}" python3 -m pytest -q -m gpu -n 4 -p no:cacheprovider -rs tests/kernels \
    > "$res/gpu_tests.log" 2>&1
echo "exit status $?" >> "$res/gpu_tests.log"
pack

for op in ${BENCH_OPS:-selective_scan retention prefix_attention linear_recurrence lif}; do
    timeout "${BENCH_OP_S:-180}" python3 bench/kernels.py --ops "$op" --out "$res/bench_$op" > "$res/bench_$op.log" 2>&1
    echo "exit status $?" >> "$res/bench_$op.log"
    pack
done
cat "$res/env.txt"; tail -3 "$res/gpu_tests.log"; for f in "$res"/bench_*.log; do echo "$f"; tail -2 "$f"; done
