#!/usr/bin/env bash
# A real Slurm cluster of two nodes on one machine, for tests/test_slurm.py; run inside its own
# Linux namespaces (unshare --mount --net --pid --uts --fork), so that Slurm's and Ray's ports,
# `ray stop` and every process stay private to this run, and the kernel ends them with it.
#
#   slurm_loopback.sh WORK REPO BIN        (BIN holds `python` and `ray`; logs go to WORK/logs)
#
# node1 (10.201.0.1) runs munged, slurmctld and a slurmd; node2 (10.201.0.2) is a network
# namespace with a slurmd of its own (its own hostname, PID namespace and node-local scratch at
# /run/node-local, as on a second machine); WORK is the cluster's shared file system. Then, through
# sweeps/cluster/slurm.sbatch: a tiny sweep (`sbatch --wait`), one with node-local results
# (refused by the pre-flight), one cancelled mid-sweep and submitted again (it resumes), one sent
# USR1 (the time-limit warning: it requeues itself and the requeued job resumes). Each
# step's output goes to WORK/logs/NAME.log (the job's to NAME-JOBID.out), its rc to steps.log.
set -euo pipefail
WORK=$1 REPO=$2 BIN=$3
LOGS=$WORK/logs
mkdir -p "$LOGS" "$WORK/state" "$WORK/spool/node1" "$WORK/spool/node2" "$WORK/shared"

# --- node1 and the network ---------------------------------------------------------------------
hostname node1
ip link set lo up
mount -t tmpfs tmpfs /run
mkdir -p /run/munge /run/node-local /run/netns
printf '127.0.0.1 localhost\n10.201.0.1 node1\n10.201.0.2 node2\n' > "$WORK/hosts"
mount --bind "$WORK/hosts" /etc/hosts
ip netns add node2
ip link add veth1 type veth peer name veth2
ip link set veth2 netns node2
ip addr add 10.201.0.1/24 dev veth1
ip link set veth1 up
ip netns exec node2 ip link set lo up
ip netns exec node2 ip addr add 10.201.0.2/24 dev veth2
ip netns exec node2 ip link set veth2 up

# --- munge (a throw-away key) and Slurm --------------------------------------------------------
dd if=/dev/urandom of="$WORK/munge.key" bs=1024 count=1 status=none
chmod 400 "$WORK/munge.key"
munged --force --key-file="$WORK/munge.key" --socket=/run/munge/munge.socket.2 \
    --pid-file="$WORK/munged.pid" --log-file="$LOGS/munged.log" --seed-file="$WORK/munge.seed"
cat > "$WORK/slurm.conf" <<EOF
ClusterName=loopback
SlurmctldHost=node1(10.201.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool/%n
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd-%n.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups here: a job's processes are its tasks' process groups (Ray's daemons stay in them)
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
KillWait=5
MinJobAge=600
InactiveLimit=0
SlurmdTimeout=60
GresTypes=gpu
NodeName=node1 NodeAddr=10.201.0.1 CPUs=1 RealMemory=4000 State=UNKNOWN
NodeName=node2 NodeAddr=10.201.0.2 CPUs=1 RealMemory=4000 State=UNKNOWN
PartitionName=loop Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$WORK/slurm.conf
slurmctld -i
# each slurmd in its own PID and mount namespace (own process table, own /run/node-local), under
# a bash that reaps the daemons Ray leaves to the namespace's first process
unshare --pid --fork --mount-proc --mount --propagation private \
    bash -c 'mount -t tmpfs tmpfs /run/node-local && { slurmd -D & wait; }' > "$LOGS/slurmd1.out" 2>&1 &
# (nsenter, not `ip netns exec`, which remounts /sys and so hides the cgroup mounts slurmd reads)
nsenter --net=/run/netns/node2 unshare --pid --fork --mount-proc --mount --uts --propagation private \
    bash -c 'hostname node2 && mount -t tmpfs tmpfs /run/node-local && { slurmd -D & wait; }' > "$LOGS/slurmd2.out" 2>&1 &
for _ in $(seq 60); do
    [[ $(sinfo -h -N -t idle -o %N 2> /dev/null | sort -u | wc -l) -ge 2 ]] && break
    sleep 1
done
sinfo -N -l > "$LOGS/sinfo.log" 2>&1 || true
if [[ $(sinfo -h -N -t idle -o %N | sort -u | wc -l) -lt 2 ]]; then
    echo "the two slurmd nodes did not come up (logs: $LOGS)" >&2
    exit 3
fi

source "$(dirname "${BASH_SOURCE[0]}")/loopback_steps.sh"

cd "$REPO"
export PATH=$BIN:$PATH RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 OMP_NUM_THREADS=1
export HOME=$WORK/home SPECTRAL_RAY_TMP=/run/node-local
export SPECTRAL_RAY_STORE=$WORK/shared/backbones SPECTRAL_RAY_CACHE=$WORK/shared/cache
mkdir -p "$HOME"
RESULTS=$WORK/shared/results
# the main job made tiny (as tests/loopback_cluster.sh): 2 sources x 2 shortcuts, 4 trials
TINY=(--set size=32 --set source_n=200 --set target_n=160 --set psd_images=32 --set pretrain.epochs=1
      --set finetune.epochs=1 --set fold=0 --set degradation=0 --set edit_strength=0)
# the node has no GPUs: the file's --gpus-per-task=1 overridden, as a lab without GPUs would
SB=(--cpus-per-task=1 --gpus-per-task=0)
SWEEP=(sweeps/cluster/slurm.sbatch sweeps/embedded-quick.yaml --storage "$RESULTS")

# 1. a sweep through the sbatch file, both nodes
step full 420 sbatch --wait "${SB[@]}" --output="$LOGS/full-%j.out" "${SWEEP[@]}" --name full "${TINY[@]}" || true
# 2. results on a node-local folder of a two-node job: refused by the pre-flight, no trial run
step local 300 sbatch --wait "${SB[@]}" --output="$LOGS/local-%j.out" sweeps/cluster/slurm.sbatch \
    sweeps/embedded-quick.yaml --storage /run/node-local/results --name local "${TINY[@]}" || true
# 3. scancel mid-sweep (8 trials), then the same sbatch command again: it resumes. One trial at a
#    time, each ten epochs (~5 s): with step 1's backbones stored a tiny trial takes ~1 s, and two at a
#    time the whole sweep had ended within the kill's own wait (state sync, poll, 3 s)
KILLED=("${SWEEP[@]}" --name killed "${TINY[@]}" --set 'fold={grid: [0, 1]}' --set finetune.epochs=10
        --set max_concurrent=1)
jid=$(sbatch --parsable "${SB[@]}" --output="$LOGS/killed-%j.out" "${KILLED[@]}")
echo "$jid" > "$LOGS/killed.jobid"
finished() {  # trial folders whose last result says done
    python -c 'import json, pathlib, sys
for t in sorted(pathlib.Path(sys.argv[1]).glob("*/result.json")):
    lines = t.read_text().splitlines()
    if lines and json.loads(lines[-1]).get("done"):
        print(t.parent.name)' "$RESULTS/killed" 2> /dev/null
}
for _ in $(seq 300); do
    [[ $(finished | wc -l) -ge 1 ]] && break
    squeue -h -j "$jid" 2> /dev/null | grep -q . || break
    sleep 1
done
sleep 3   # the experiment state (saved every 2 s) now has them as finished
finished > "$LOGS/finished-before-kill.txt"
scancel "$jid"
for _ in $(seq 60); do squeue -h -j "$jid" 2> /dev/null | grep -q . || break; sleep 1; done
echo "scancel $jid; finished before: $(wc -l < "$LOGS/finished-before-kill.txt"), after: $(finished | wc -l)" \
    >> "$LOGS/steps.log"
step resume 420 sbatch --wait "${SB[@]}" --output="$LOGS/resume-%j.out" "${KILLED[@]}" || true
# 4. the time-limit path: USR1 (what --signal=B:USR1@300 sends before the limit) makes the job
#    requeue itself; the requeued job runs the same command, which resumes (here: the finished
#    experiment of step 1, so it only restores and reports)
jid=$(sbatch --parsable "${SB[@]}" --output="$LOGS/requeue-%j.out" "${SWEEP[@]}" --name full "${TINY[@]}")
for _ in $(seq 120); do grep -q "(restart 0)" "$LOGS/requeue-$jid.out" 2> /dev/null && break; sleep 1; done
scancel --batch --signal=USR1 "$jid"
echo "USR1 to job $jid" >> "$LOGS/steps.log"
# Slurm holds a requeued job for about two minutes; start it now instead (the test's time only)
for _ in $(seq 60); do
    scontrol show job -o "$jid" 2> /dev/null | grep -q 'JobState=PENDING.*Restarts=1' && break
    sleep 1
done
scontrol update JobId="$jid" StartTime=now >> "$LOGS/steps.log" 2>&1 || true
for _ in $(seq 150); do
    scontrol show job -o "$jid" 2> /dev/null | grep -qE 'JobState=(COMPLETED|FAILED|CANCELLED|TIMEOUT)' && break
    sleep 2
done
scontrol show job -o "$jid" > "$LOGS/requeue-job.txt" 2>&1 || true
sinfo -N -l > "$LOGS/sinfo-end.log" 2>&1 || true

# --- clean up: jobs, then the daemons (bounded waits) ------------------------------------------
scancel --full --quiet $(squeue -h -o %i 2> /dev/null) 2> /dev/null || true
for _ in $(seq 20); do [[ -z $(squeue -h 2> /dev/null) ]] && break; sleep 1; done
scontrol shutdown > /dev/null 2>&1 || true   # slurmctld and both slurmd
for _ in $(seq 30); do
    ps -eo comm | grep -qE '^(slurmctld|slurmd|slurmstepd)$' || break
    sleep 1
done
if [[ -s $WORK/munged.pid ]]; then   # (the namespace's end would stop it too)
    kill "$(cat "$WORK/munged.pid")" 2> /dev/null || true
    for _ in $(seq 10); do kill -0 "$(cat "$WORK/munged.pid")" 2> /dev/null || break; sleep 1; done
fi
ps -eo pid,args > "$LOGS/ps-at-end.log"
