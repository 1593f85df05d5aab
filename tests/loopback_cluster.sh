#!/usr/bin/env bash
# The cluster launcher for real, on one machine: run by tests/test_ray_up.py inside its own
# Linux namespaces (unshare --mount --net --pid), so that sshd on port 22, Ray's ports, `ray stop`
# (which kills every Ray process it can see) and everything under /tmp stay private to this run,
# and the kernel ends every process of it when this script exits.
#
#   loopback_cluster.sh WORK REPO PYTHON          (WORK holds cluster.yaml; logs go to WORK/logs)
#
# Steps: loopback up, a private /tmp and /run, root's home moved to WORK/home (a bind-mounted
# copy of /etc/passwd: nothing is written to the real ~ or ~/.ssh), a throw-away host key and
# client key, sshd on 127.0.0.1 and 127.0.0.2; then `ray up`, `ray submit` of a tiny sweep,
# `ray job submit` of another through the `ray dashboard` tunnel, `ray down`.
set -euo pipefail
WORK=$1 REPO=$2 PYTHON=$3
LOGS=$WORK/logs
mkdir -p "$LOGS" "$WORK/home" "$WORK/tmp" "$WORK/shared"

# --- namespace set-up --------------------------------------------------------------------------
ip link set lo up
mount -t tmpfs tmpfs /run
mkdir -p /run/sshd /run/keep
# a private /tmp, keeping the paths this run needs that live below it (WORK, the checkout, venv)
keep=()
for p in "$WORK" "$REPO" "$(dirname "$(dirname "$PYTHON")")"; do
    case "$p" in /tmp/*) keep+=("$p") ;; esac
done
i=0
for p in "${keep[@]}"; do mkdir -p "/run/keep/$i" && mount --bind "$p" "/run/keep/$i"; i=$((i + 1)); done
mount -t tmpfs tmpfs /tmp
i=0
for p in "${keep[@]}"; do mkdir -p "$p" && mount --bind "/run/keep/$i" "$p"; i=$((i + 1)); done
# root's home is WORK/home for sshd and for this script's own `ray` commands
sed "s#^root:\([^:]*\):0:0:\([^:]*\):[^:]*:#root:\1:0:0:\2:$WORK/home:#" /etc/passwd > "$WORK/passwd"
mount --bind "$WORK/passwd" /etc/passwd
export HOME=$WORK/home TMPDIR=$WORK/tmp RAY_TMPDIR=$WORK/tmp
touch "$HOME/.bashrc"   # Ray's remote commands `source ~/.bashrc`

# --- throw-away keys and sshd ------------------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/id_ed25519"
cp "$WORK/id_ed25519.pub" "$WORK/authorized_keys"
cat > "$WORK/sshd_config" <<EOF
Port 22
ListenAddress 127.0.0.1
ListenAddress 127.0.0.2
HostKey $WORK/host_key
PidFile $WORK/sshd.pid
AuthorizedKeysFile $WORK/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
MaxSessions 64
MaxStartups 64
Subsystem sftp internal-sftp
EOF
/usr/sbin/sshd -f "$WORK/sshd_config" -E "$LOGS/sshd.log"

source "$(dirname "${BASH_SOURCE[0]}")/loopback_steps.sh"

cd "$REPO"
export PATH=$(dirname "$PYTHON"):$PATH RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
# Ray >= 2.50's `ray up` starts autoscaler v2, which never launches a `local` provider's worker_ips
# (the head comes up alone; ray-project/ray#59905, #46204): v1 does, as docs/CLUSTER.md says
export RAY_UP_enable_autoscaler_v2=0
CLUSTER=$WORK/cluster.yaml
# the main job made tiny: 2 sources x 2 shortcuts at d = 0, fold 0 (4 trials, 2 backbones). `ray
# submit` hands the words after `--` to the head's shell unquoted: no spaces or braces in them
SWEEP_ARGS=(--storage "$WORK/shared/results" --set size=32 --set source_n=200 --set target_n=160
            --set psd_images=32 --set pretrain.epochs=1 --set finetune.epochs=1 --set fold=0
            --set degradation=0 --set edit_strength=0)
trap 'step down 120 ray down -y "$CLUSTER" || true' EXIT

step up 300 ray up -y --no-config-cache "$CLUSTER"
# the head's autoscaler starts the worker (over ssh, like a cloud node); wait for it to join
step wait-worker 240 python - <<'EOF'
import time

import ray

ray.init(address="127.0.0.1:6379", log_to_driver=False, logging_level="ERROR")
deadline = time.time() + 220
while sum(n["Alive"] for n in ray.nodes()) < 2 and time.time() < deadline:
    time.sleep(2)
print("nodes alive:", sum(n["Alive"] for n in ray.nodes()))
EOF
# paths after `--` are on the head, where file_mounts put the checkout in ~/spectral-ray
step submit 420 ray submit "$CLUSTER" sweeps/launch.py -- '~/spectral-ray/sweeps/embedded-quick.yaml' \
    --name submitted "${SWEEP_ARGS[@]}"
ray dashboard --port 8266 "$CLUSTER" > "$LOGS/dashboard.log" 2>&1 &
for _ in $(seq 60); do
    python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8266/api/version', timeout=2)" 2>/dev/null && break
    sleep 1
done
# the job CLI needs ray[default], as on a laptop: the nodes' environment has it
RAY_ADDRESS=http://127.0.0.1:8266 step job 420 "$WORK/nodeenv/bin/ray" job submit --submission-id sr-job \
    --working-dir . -- python sweeps/launch.py sweeps/embedded-quick.yaml --name job "${SWEEP_ARGS[@]}"
# the documented follow-ups: the job's logs and status
RAY_ADDRESS=http://127.0.0.1:8266 step job-logs 60 "$WORK/nodeenv/bin/ray" job logs sr-job
RAY_ADDRESS=http://127.0.0.1:8266 step job-status 60 "$WORK/nodeenv/bin/ray" job status sr-job
step report 300 python -m spectral_ray.cli report "$WORK/shared/results/submitted"
ps -eo pid,args > "$LOGS/ps-before-down.log"
trap - EXIT
step down 120 ray down -y "$CLUSTER"
sleep 2
ps -eo pid,args > "$LOGS/ps-after-down.log"
