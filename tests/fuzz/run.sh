#!/bin/sh
# run.sh BUILD SECONDS [NAME...]: fuzz each harness (all by default) for
# SECONDS with libFuzzer. Seeds come from tests/fuzz/corpus/NAME (read only);
# new inputs go to BUILD/fuzz-corpus/NAME, crashes to BUILD/fuzz-crashes/.
# A crash fails the run: copy its input to tests/fuzz/crashes/NAME/ with the
# fix, and `make check` replays it from then on.
set -eu
build=$1 seconds=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
names=${*:-$(find "$build/tests/fuzz" -maxdepth 1 -type f -perm -u+x -name 'fuzz-*' \
              -printf '%f\n' | sed 's/^fuzz-//' | sort)}
[ -n "$names" ] || { echo "run.sh: no harnesses built in $build/tests/fuzz" >&2; exit 1; }
mkdir -p "$build/fuzz-crashes"
failed=
for name in $names; do
    work="$build/fuzz-corpus/$name"
    mkdir -p "$work"
    dict=
    [ -f "$here/$name.dict" ] && dict="-dict=$here/$name.dict"
    echo "== fuzz-$name for ${seconds}s"
    if ! "$build/tests/fuzz/fuzz-$name" -max_total_time="$seconds" -print_final_stats=1 \
            -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$build/fuzz-crashes/$name-" \
            $dict "$work" "$here/corpus/$name" 2>"$build/fuzz-$name.log"; then
        failed="$failed $name"
    fi
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^#[0-9]+.*DONE|cov:' "$build/fuzz-$name.log" | tail -3
done
if [ -n "$failed" ]; then
    echo "make fuzz: crashes in:$failed (inputs in $build/fuzz-crashes, logs in $build/fuzz-NAME.log)"
    exit 1
fi
echo "make fuzz: no crash"
