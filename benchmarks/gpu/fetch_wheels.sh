#!/usr/bin/env bash
# Download exactly the wheels of benchmarks/gpu/wheels.txt for the GPU machine (CPython 3.12, manylinux x86-64)
# into benchmarks/gpu/wheels/ (or DEST), replacing what was there. Run it here, where a package index is
# reachable; then carry benchmarks/gpu/wheels to the machine with the working tree.
#   bash benchmarks/gpu/fetch_wheels.sh [DEST]        (PYTHON=... to choose the interpreter whose pip runs)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dest=${1:-$here/wheels}
python=${PYTHON:-python3}
limit_mib=${WHEELS_LIMIT_MIB:-48}  # the device takes 64 MiB per call, the working tree included
mapfile -t reqs < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$here/wheels.txt" | grep -v '^$')
rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$dest.tmp" "${reqs[@]}"
count=$(ls "$dest.tmp"/*.whl | wc -l)
if [ "$count" -ne "${#reqs[@]}" ]; then
    echo "fetch_wheels: expected ${#reqs[@]} wheels, got $count" >&2
    exit 1
fi
bytes=$(cat "$dest.tmp"/*.whl | wc -c)
mib=$(( (bytes + 1048575) / 1048576 ))
if [ "$mib" -gt "$limit_mib" ]; then
    echo "fetch_wheels: the wheels take $mib MiB, over the $limit_mib MiB limit" >&2
    exit 1
fi
rm -rf "$dest" && mv "$dest.tmp" "$dest"
echo "fetch_wheels: $count wheels, $mib MiB in $dest"
ls -1 "$dest"
