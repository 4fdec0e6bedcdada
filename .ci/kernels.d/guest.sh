#!/bin/bash
# Runs inside the guest as root, chrooted into the host's read-only root (so the host's
# glibc and the test binaries built on the host run unchanged). Runs each snapshotted test
# binary from the package root, as `cargo test` would, and leaves per binary in $OUT:
#   NAME.log     its stdout+stderr
#   NAME.result  "EXIT_CODE SECONDS"
# Everything else the host wants to know goes in dot files. Settings come from $OUT/.spec,
# written by .ci/kernels.
set -u
OUT=$1
# shellcheck disable=SC1091
. "$OUT/.spec"

log() { echo "ringsplice-guest: $*" >/dev/console; }

uname -r >"$OUT/.uname"

# The host's limits: the guest kernel's defaults (1024 open files) are not what the tests
# see on a real machine.
ulimit -Hn "$NOFILE_HARD" && ulimit -Sn "$NOFILE_SOFT" || log "cannot set ulimit -n"
ulimit -Hl "$MEMLOCK_HARD" && ulimit -Sl "$MEMLOCK_SOFT" || log "cannot set ulimit -l"
ip link set lo up 2>/dev/null || busybox ip link set lo up || log "cannot bring up lo"

{
    echo "uname: $(uname -a)"
    echo "cmdline: $(cat /proc/cmdline)"
    echo "io_uring_disabled: $(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo absent)"
    echo "nproc: $(nproc)"
    echo "clocksource: $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null)"
    echo "--- ulimit -a"
    ulimit -a
    echo "--- mounts"
    cat /proc/mounts
    echo "--- ip addr"
    ip addr 2>&1
    echo "--- env"
    env "${TEST_ENV[@]}" env
} >"$OUT/.guest-env" 2>&1

# run_one DIR NAME: one test binary, stdout+stderr into DIR/NAME.log.
run_one() {
    local dir=$1 name=$2 start end rc
    log "start $name${3:+ ($3)}"
    start=$(date +%s.%N)
    (
        cd "$REPO_ROOT" || exit 99
        exec timeout --kill-after=30 "$BIN_TIMEOUT" \
            env "${TEST_ENV[@]}" "$BIN_DIR/$name" "${TEST_ARGS[@]}"
    ) </dev/null >"$dir/$name.log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    echo "$rc $(echo "$end - $start" | awk '{print $1 - $3}')" >"$dir/$name.result"
    log "end $name: exit $rc"
}

if [ -n "$REPORT_BIN" ]; then
    log "kernel_report"
    (cd "$REPO_ROOT" && exec timeout --kill-after=10 300 env "${TEST_ENV[@]}" "$REPORT_BIN") \
        </dev/null >"$OUT/report.txt" 2>"$OUT/report.err"
    echo $? >"$OUT/report.rc"
fi

for name in "${BINS[@]}"; do
    run_one "$OUT" "$name"
done

# A real "no io_uring" kernel: kernel.io_uring_disabled=2 (6.6+).
if [ ${#DISABLED_BINS[@]} -gt 0 ]; then
    if [ -e /proc/sys/kernel/io_uring_disabled ]; then
        mkdir -p "$OUT/io_uring_disabled"
        printf '%s\n' "${DISABLED_BINS[@]}" >"$OUT/io_uring_disabled/.planned"
        echo 2 >/proc/sys/kernel/io_uring_disabled
        for name in "${DISABLED_BINS[@]}"; do
            run_one "$OUT/io_uring_disabled" "$name" "io_uring_disabled=2"
        done
        echo 0 >/proc/sys/kernel/io_uring_disabled
        echo ran >"$OUT/.io_uring_disabled"
    else
        echo absent >"$OUT/.io_uring_disabled"
    fi
fi

dmesg >"$OUT/.dmesg" 2>&1
touch "$OUT/.done"
sync
