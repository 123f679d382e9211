#!/usr/bin/env bash
# matscale's setup of one cluster node, run by `ray up` on every node (setup_commands) once the project is
# synced: installs the project, mounts the shared filesystem, writes ~/.matscale/env and sources it from
# ~/.bashrc (Ray runs its commands in a login shell, so `ray start`, `ray submit` and every trial see it).
#
#   bash ~/matscale/cluster/node-setup.sh --tracking-uri http://HEAD_IP:5000 --shared /mnt/shared \
#        [--storage s3://BUCKET/ray] [--nfs SERVER:/EXPORT] [--pip "boto3"]
#
# HEAD_IP is replaced by the head's private address ($RAY_HEAD_IP on workers, this node's own on the head).
# --storage defaults to SHARED/matscale/ray. Token authentication is always on (RAY_AUTH_MODE=token); the
# token itself arrives through file_mounts (~/.ray/auth_token), never through this repository.
set -euo pipefail
sudo=$([ "$(id -u)" = 0 ] || echo sudo)  # root (containers, lab machines) has no sudo
tracking="" storage="" shared="" nfs="" pip_extra=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tracking-uri) tracking=$2; shift 2 ;;
    --storage) storage=$2; shift 2 ;;
    --shared) shared=$2; shift 2 ;;
    --nfs) nfs=$2; shift 2 ;;
    --pip) pip_extra=$2; shift 2 ;;
    *) echo "node-setup.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$tracking" ] && [ -n "$shared" ] || { echo "node-setup.sh: --tracking-uri and --shared are required" >&2; exit 2; }
head_ip=${RAY_HEAD_IP:-$(hostname -I | awk '{print $1}')}
repo=$(cd "$(dirname "$0")/.." && pwd)

# the project (torch comes with the image: the cloud configs use images with CUDA torch installed)
python3 -m pip install -q -e "$repo" $pip_extra

if [ -n "$nfs" ] && ! mountpoint -q "$shared"; then
  command -v mount.nfs4 >/dev/null || { $sudo apt-get update -q && $sudo apt-get install -y -q nfs-common; }
  $sudo mkdir -p "$shared"
  $sudo mount -t nfs4 -o nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2 "$nfs" "$shared"
fi
$sudo mkdir -p "$shared/matscale" && $sudo chown "$(id -u):$(id -g)" "$shared/matscale"

mkdir -p ~/.matscale && chmod 700 ~/.matscale
tmp=$(mktemp ~/.matscale/env.XXXXXX)
cat > "$tmp" <<ENV
export RAY_AUTH_MODE=token
export MATSCALE_AUTOSCALE=1
export MATSCALE_SHARED=$shared
export MATSCALE_STORAGE=${storage:-$shared/matscale/ray}
export MLFLOW_TRACKING_URI=${tracking//HEAD_IP/$head_ip}
ENV
mv "$tmp" ~/.matscale/env
grep -q '.matscale/env' ~/.bashrc 2>/dev/null || echo '[ -f ~/.matscale/env ] && . ~/.matscale/env' >> ~/.bashrc
echo "matscale node ready: $(grep -c export ~/.matscale/env) settings in ~/.matscale/env"
