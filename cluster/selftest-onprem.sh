#!/usr/bin/env bash
# The real `ray up` / `ray submit` / `ray down` path of cluster/onprem.yaml, against this machine through a local
# sshd — what CI cannot do (it needs root, sshd and writes to ~/.bashrc, ~/.ssh and ~/.matscale; all restored).
#
#   sudo apt-get install -y openssh-server postgresql     # Debian's packages (start-mlflow.sh installs postgresql too)
#   bash cluster/selftest-onprem.sh                        # from the repository root, with .venv built
#
# The head is 127.0.0.1 (no workers: the local provider keys nodes by IP), the shared path a temp folder; the
# config is cluster/onprem.yaml with only those values, the SSH user/key and the ports changed. Prints the sweep's
# table and exits non-zero if any step fails.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=$repo/.venv/bin
work=$(mktemp -d /tmp/matscale-selftest.XXXXXX)
port_ssh=2222 port_mlflow=25001
[ "$(id -u)" = 0 ] || { echo "selftest-onprem.sh: run as root (sshd and the node scripts act on root's home)" >&2; exit 2; }
mkdir -p ~/.ssh
for f in ~/.bashrc ~/.ssh/config ~/.ssh/authorized_keys; do cp "$f" "$work/$(basename "$f").orig" 2>/dev/null || : > "$work/$(basename "$f").orig"; done
cleanup() {
  (cd "$repo" && "$venv/ray" down -y "$work/onprem-local.yaml" >/dev/null 2>&1) || true
  pkill -f "mlflow server --host .* --port $port_mlflow" 2>/dev/null || true
  pkill -f huey_consumer 2>/dev/null || true
  service postgresql stop >/dev/null 2>&1 || true  # started by start-mlflow.sh on the "head"
  [ -f "$work/sshd.pid" ] && kill "$(cat "$work/sshd.pid")" 2>/dev/null || true
  cp "$work/.bashrc.orig" ~/.bashrc; cp "$work/config.orig" ~/.ssh/config; cp "$work/authorized_keys.orig" ~/.ssh/authorized_keys
  rm -rf ~/matscale ~/.matscale
  "$venv/pip" install -q -e "$repo" --no-deps >/dev/null 2>&1 || true  # node-setup.sh re-pointed the editable install
}
trap cleanup EXIT

mkdir -p /run/sshd ~/.ssh && chmod 700 ~/.ssh
ssh-keygen -q -t ed25519 -N "" -f "$work/key"
cat "$work/key.pub" >> ~/.ssh/authorized_keys && chmod 600 ~/.ssh/authorized_keys
/usr/sbin/sshd -p $port_ssh -o ListenAddress=127.0.0.1 -o PidFile="$work/sshd.pid"
printf 'Host 127.0.0.1\n  Port %s\n  StrictHostKeyChecking no\n' $port_ssh >> ~/.ssh/config
[ -s ~/.ray/auth_token ] || "$venv/ray" get-auth-token --generate >/dev/null

"$venv/python" - "$repo/cluster/onprem.yaml" "$work" $port_mlflow <<'PY'
import sys, yaml
src, work, port = sys.argv[1], sys.argv[2], sys.argv[3]
c = yaml.safe_load(open(src))
c["cluster_name"] = "matscale-selftest"
c["provider"].update(head_ip="127.0.0.1", worker_ips=[])
c["auth"] = {"ssh_user": "root", "ssh_private_key": f"{work}/key"}
path = f"grep -q '{sys.executable.rsplit('/', 1)[0]}' ~/.bashrc || echo 'export PATH={sys.executable.rsplit('/', 1)[0]}:$PATH' >> ~/.bashrc"
setup = c["setup_commands"][-1].split("&&", 1)[1]  # the venv already has ray; keep node-setup.sh
c["setup_commands"] = [path, setup.replace(":5000", f":{port}").replace("/mnt/shared", f"{work}/shared")]
c["head_setup_commands"] = [f"bash ~/matscale/cluster/mlflow/start-mlflow.sh --port {port}"]
c["head_start_ray_commands"] = ["ray stop", "ray start --head --port=26379 --dashboard-host=127.0.0.1 "
                                "--disable-usage-stats --autoscaling-config=~/ray_bootstrap_config.yaml"]
yaml.safe_dump(c, open(f"{work}/onprem-local.yaml", "w"), sort_keys=False)
open(f"{work}/spec.yaml", "w").write("""experiment: selftest-onprem
dataset:
  synthetic: {n: 300, points: 21, seed: 0}
  data_dir: ${MATSCALE_SHARED}/matscale/data
archs: [cgc]
axes: {n_train: [100, 200], n_params: [1.0e4], seeds: [0]}
budget: {epochs: 2, patience: 5}
hpo: {trials_per_point: 1, space: {lr: 2.0e-3, batch_size: 32}}
system_metrics: false
tracking_uri: ${MLFLOW_TRACKING_URI}
storage_path: ${MATSCALE_STORAGE}
""")
PY
cd "$repo"
"$venv/matscale" cluster check "$work/onprem-local.yaml"
echo "== ray up";     "$venv/ray" up -y --no-config-cache "$work/onprem-local.yaml" > "$work/up.log" 2>&1 || { tail -40 "$work/up.log"; exit 1; }
echo "== ray submit"; "$venv/ray" submit "$work/onprem-local.yaml" sweeps/run.py -- --spec "$work/spec.yaml" 2>&1 \
  | grep -E "FINISHED|FAILED|MLflow:|error" || { echo "ray submit failed (log: $work)"; exit 1; }
code=$(curl -s -o /dev/null -w "%{http_code}" http://127.0.0.1:8265/api/version || true)
echo "== dashboard without the token answers $code (401: token auth is on)"
echo "== ray down"
