#!/usr/bin/env bash
# The GPU checks a CPU-only session cannot run, as one command on a lent GPU machine:
# the kernel tests at real sizes (pytest -m gpu) and the kernel benchmarks beside their peers
# (flash-linear-attention when it imports; mamba_ssm when installed or built here).
#
#   bash bench/gpu_checks.sh OUT_DIR
#
# Runs from the repository root with the machine's python3 (torch, Triton, pytest there);
# wheels in .whl/ (jsonargparse, fla) are installed into /tmp/site first. A mamba_ssm source
# release in .whl/ (mamba_ssm-*.tar.gz; or MAMBA_SSM_SDIST) is built in the background from
# the start (bench/mamba_ssm_peer.py, ~3 min) and the selective-scan bench waits for it.
# Each part has its own time limit (GPU_TEST_S, BENCH_OP_S, BACKBONES_S seconds) and the
# results so far are packed into OUT_DIR/results.tgz after each, so a run cut short still
# returns what it measured. Knobs:
#   GPU_TESTS=0           skip the kernel tests
#   BENCH_OPS="op[@arg...] ..."   the kernel benches, each with bench/kernels.py options,
#                         e.g. "retention@--lengths=1024,16384 lif@--dtypes=bfloat16"
#   BENCH_BACKBONES="name,name[@arg...]"  bench/backbones.py for these families (none by default)
# Measured on an H200 (2026-12-04): the tests take ~45 s; the selective scan's bench ~100 s;
# retention, linear_recurrence and lif did not finish in 55-110 s each (hence 180 s each).
# A 15-minute lease fits the tests and two or three whole ops: narrow them with --lengths.
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
bench_args() { local spec="$1"; echo "${spec#*@}" | tr '@' ' '; }  # op@--a=1@--b=2 -> --a=1 --b=2

sdist="${MAMBA_SSM_SDIST:-$(ls .whl/mamba_ssm-*.tar.gz 2>/dev/null | head -1)}"
peer=/tmp/mamba_ssm_peer
if [ -n "$sdist" ]; then
    export MAMBA_SSM_PEER="$peer"
    python3 bench/mamba_ssm_peer.py "$sdist" "$peer" > "$res/mamba_ssm_build.log" 2>&1 &
    build_pid=$!
fi

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
  python3 -c "import fla; print('fla', fla.__version__)" 2>&1 | tail -1
} > "$res/env.txt" 2>&1
pack

if [ "${GPU_TESTS:-1}" != 0 ]; then
    timeout "${GPU_TEST_S:-200}" python3 -m pytest -q -m gpu -n 4 -p no:cacheprovider -rs tests/kernels \
        > "$res/gpu_tests.log" 2>&1
    echo "exit status $?" >> "$res/gpu_tests.log"
    pack
fi

for spec in ${BENCH_OPS:-selective_scan retention prefix_attention linear_recurrence lif}; do
    op="${spec%%@*}"; args=""; [ "$spec" != "$op" ] && args="$(bench_args "$spec")"
    if [ "$op" = selective_scan ] && [ -n "${build_pid:-}" ]; then
        wait "$build_pid"; echo "mamba_ssm build exit status $?" >> "$res/mamba_ssm_build.log"; build_pid=""
        pack
    fi
    # shellcheck disable=SC2086  # args are words
    timeout "${BENCH_OP_S:-180}" python3 bench/kernels.py --ops "$op" $args --out "$res/bench_$op" \
        > "$res/bench_$op.log" 2>&1
    echo "exit status $?" >> "$res/bench_$op.log"
    pack
done
if [ -n "${BENCH_BACKBONES:-}" ]; then
    names="${BENCH_BACKBONES%%@*}"; args=""; [ "$BENCH_BACKBONES" != "$names" ] && args="$(bench_args "$BENCH_BACKBONES")"
    # shellcheck disable=SC2086
    timeout "${BACKBONES_S:-180}" python3 bench/backbones.py --backbones "$names" $args --out "$res/bench_backbones" \
        > "$res/bench_backbones.log" 2>&1
    echo "exit status $?" >> "$res/bench_backbones.log"
    pack
fi
cat "$res/env.txt"; tail -3 "$res/gpu_tests.log" 2>/dev/null; tail -2 "$res/mamba_ssm_build.log" 2>/dev/null; for f in "$res"/bench_*.log; do echo "$f"; tail -2 "$f"; done
