#!/bin/sh
# Runs bench/tools/bare_pipeline.c's five processes: sh bench/tools/bare_pipeline.sh BINARY [RATE...]
set -e
bin=$1
shift
dir=$(mktemp -d /tmp/zbp.XXXXXX)
fifo=$dir/keep
mkfifo "$fifo"
# The relays live while the fifo is held open; they exit when it closes.
sleep 600 > "$fifo" &
holder=$!
for role in subject worker worker im; do "$bin" "$role" "$dir" < "$fifo" & done
sleep 0.3
status=0
timeout 60 "$bin" service "$dir" "$@" || status=$?
kill "$holder"
wait 2>/dev/null || true
rm -rf "$dir"
exit $status
