#!/usr/bin/env bash
# The GPU check of issue 17, one command, from the repository root of a copy of the working tree:
#
#   bash benchmarks/gpu/run.sh                 # on the GPU machine: install, then every part; results in $OUT
#   bash benchmarks/gpu/run.sh --dry-run       # anywhere: CPU, tiny sizes, the current environment, no installs
#   bash benchmarks/gpu/run.sh --parts dpo,sampling --system-transformers
#
# Before a GPU run, fetch the wheels here (bash benchmarks/gpu/fetch_wheels.sh) and carry benchmarks/gpu/wheels.
# The install puts those wheels and mmalign's own packages (core and plugins, from this tree) into a private
# folder first on PYTHONPATH, never into the machine's site-packages. --system-transformers keeps the
# machine's transformers and peft (skips those wheels). Every other option goes to check.py (--parts,
# --total-seconds, --scratch). Writes gpu-check.json, gpu-check.txt and gpu-check.log to $OUT (default
# ./gpu-check-out); models, runs and logs of the parts stay in a work folder under /tmp.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=${PYTHON:-python3}
out=${OUT:-$repo/gpu-check-out}
dry=0
system_tf=0
args=()
for a in "$@"; do
    case $a in
        --dry-run) dry=1; args+=(--dry-run) ;;
        --system-transformers) system_tf=1 ;;
        *) args+=("$a") ;;
    esac
done
wheel_dir=${GPU_CHECK_WHEELS:-$here/wheels}
work=${GPU_CHECK_WORK:-$(mktemp -d /tmp/mmalign-gpu-check.XXXXXX)}
mkdir -p "$work" "$out"
log=$work/install.log

# The wheels of wheels.txt, by file name (a wheel's name starts with the project name, '-' as '_').
wanted_wheels() {
    sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$here/wheels.txt" | grep -v '^$' | while read -r req; do
        name=${req%%==*}
        if [ "$system_tf" = 1 ] && { [ "$name" = transformers ] || [ "$name" = regex ] || [ "$name" = peft ]; }; then
            continue
        fi
        version=${req#*==}
        stem=$(echo "$name" | tr '-' '_')
        found=$(ls "$wheel_dir/${stem}-${version}-"*.whl 2>/dev/null | head -n 1)
        if [ -n "$found" ]; then echo "$found"; else echo "MISSING:$req"; fi
    done
}

start=$(date +%s.%N)
status=ok
if [ "$dry" = 1 ]; then
    # No installs on a dry run: the current environment already has everything; only the plan is checked.
    echo "dry run: would install these wheels (from $wheel_dir):" >"$log"
    wanted_wheels >>"$log"
    grep -q . "$here/wheels.txt" || { echo "run.sh: wheels.txt is empty" >&2; exit 2; }
else
    site=$work/site
    mapfile -t wheels < <(wanted_wheels)
    missing=$(printf '%s\n' "${wheels[@]}" | grep '^MISSING:' || true)
    present=$(printf '%s\n' "${wheels[@]}" | grep -v '^MISSING:' || true)
    if [ -n "$missing" ]; then
        status=incomplete
        echo "run.sh: wheels missing (run benchmarks/gpu/fetch_wheels.sh here and carry benchmarks/gpu/wheels):" >&2
        echo "$missing" >&2
    fi
    {
        echo "== the carried wheels, and mmalign's core and plugins from $repo"; printf '%s\n' "$present"
        # shellcheck disable=SC2086
        "$python" -m pip install --no-deps --no-index --no-build-isolation --disable-pip-version-check --target "$site" \
            $present "$repo" "$repo"/plugins/mmalign-*
    } >>"$log" 2>&1 || { status=failed; echo "run.sh: the install failed; see $log" >&2; tail -n 20 "$log" >&2; }
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
    # The carried transformers must import with the machine's torch; if it does not, fall back to the
    # machine's own transformers and peft (recorded as the install status) rather than lose every part.
    probe='import torch, transformers, peft, pydantic, mmalign_hf.model'
    if [ "$system_tf" = 0 ] && ! "$python" -c "$probe" >>"$log" 2>&1; then
        echo "run.sh: the carried transformers/peft do not import here; using the machine's (see $log)" >&2
        rm -rf "$site"/transformers "$site"/transformers-* "$site"/peft "$site"/peft-* "$site"/regex "$site"/regex-*
        status=fallback-system-transformers
        "$python" -c "$probe" >>"$log" 2>&1 || status=failed
    fi
fi
install_s=$(awk "BEGIN {print $(date +%s.%N) - $start}")
export GPU_CHECK_INSTALL_SECONDS=$install_s GPU_CHECK_INSTALL_STATUS=$status GPU_CHECK_INSTALL_LOG=$log
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 MMALIGN_PROGRESS=0 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1
MMALIGN_COMMIT=${MMALIGN_COMMIT:-$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || true)}
export MMALIGN_COMMIT
echo "run.sh: install $status in ${install_s}s; work folder $work"
"$python" "$here/check.py" --out "$out" --scratch "$work/scratch" "${args[@]}"
