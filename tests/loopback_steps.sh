# Sourced by tests/loopback_cluster.sh and tests/slurm_loopback.sh (LOGS must be set):
#   step NAME TIMEOUT_S COMMAND...   run COMMAND with its output in LOGS/NAME.log and its exit
#                                    status appended to LOGS/steps.log (tests/namespaces.py reads both)
step() {
    local name=$1 limit=$2
    shift 2
    echo "+ [$name] $*" >> "$LOGS/steps.log"
    local rc=0
    timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1 || rc=$?
    echo "$name rc=$rc" >> "$LOGS/steps.log"
    return $rc
}
