#!/usr/bin/env bash
# fuzz.sh: run every native Go fuzz target for $FUZZTIME each (default 60s),
# one `go test -fuzz` per target since it accepts one target and one package
# at a time. FUZZ=regexp narrows the targets (matched against pkg.FuzzName).
# Fails on the first target that finds a crasher; the crasher is saved in
# that package's testdata/fuzz/ for `go test` to replay.
set -euo pipefail
FUZZTIME=${FUZZTIME:-60s}
FUZZ=${FUZZ:-.}
cd "$(dirname "$0")/.."

# Fuzz targets live in untagged _test.go files (go test -fuzz builds no tags).
mapfile -t targets < <(grep -rl --include='*_test.go' -E '^func Fuzz[A-Z0-9_][A-Za-z0-9_]*\(' . |
	grep -v -e '^./web/node_modules/' -e '^./.dev/' |
	while read -r f; do
		dir=$(dirname "$f")
		grep -oE '^func Fuzz[A-Za-z0-9_]*' "$f" | sed "s|^func |$dir |"
	done | sort -u)

if ((${#targets[@]} == 0)); then
	echo "fuzz: no fuzz targets found"
	exit 0
fi
n=0
for t in "${targets[@]}"; do
	dir=${t% *}
	name=${t#* }
	[[ "$dir/$name" =~ $FUZZ ]] || continue
	echo "fuzz: $dir $name for $FUZZTIME"
	{ go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$dir" 2>&1; } | { grep -v -e '^fuzz: elapsed' -e '^fuzz: minimizing' || true; } || {
		echo "fuzz: $dir $name failed; the crasher is in $dir/testdata/fuzz/$name/" >&2
		exit 1
	}
	n=$((n + 1))
done
echo "fuzz: $n targets passed"
