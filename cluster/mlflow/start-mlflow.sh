#!/usr/bin/env bash
# Start matscale's MLflow tracking server on the Ray head, bound to the head's private address only.
#
#   bash ~/matscale/cluster/mlflow/start-mlflow.sh [--artifacts s3://BUCKET/mlflow] [--port 5000] [--auth]
#
# Backend store: $MATSCALE_MLFLOW_DB (an external PostgreSQL, e.g. RDS / Cloud SQL:
#   postgresql://USER:PASSWORD@HOST:5432/mlflow — put it in ~/.matscale/mlflow-db, mode 600, never in the repo),
# else a PostgreSQL on this node whose password is generated here and stays in ~/.matscale (mode 600).
# Artifacts are proxied by the server (--serve-artifacts), so workers need no storage credentials for them.
# The server listens on the private IP; from a laptop use `ray dashboard CLUSTER.yaml` or
#   ssh -L 5000:HEAD_PRIVATE_IP:5000 USER@HEAD_PUBLIC_IP
# Idempotent: does nothing when the server already answers.
set -euo pipefail
sudo=$([ "$(id -u)" = 0 ] || echo sudo)  # root (containers, lab machines) has no sudo
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
artifacts="" port=5000 auth="--no-auth"  # a private address: reachable inside the cluster's network only
while [ $# -gt 0 ]; do
  case "$1" in
    --artifacts) artifacts=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --auth) auth=--auth; shift ;;
    *) echo "start-mlflow.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
. ~/.matscale/env
host=$(hostname -I | awk '{print $1}')
if curl -sf "http://$host:$port/health" >/dev/null; then echo "MLflow already up on $host:$port"; exit 0; fi

if [ -f ~/.matscale/mlflow-db ]; then
  MATSCALE_MLFLOW_DB=$(cat ~/.matscale/mlflow-db)
fi
if [ -z "${MATSCALE_MLFLOW_DB:-}" ]; then  # PostgreSQL on the head, reachable on its loopback only
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { $sudo apt-get update -q && $sudo apt-get install -y -q postgresql; }
  $sudo systemctl enable --now postgresql 2>/dev/null || $sudo service postgresql start
  pw=~/.matscale/pg-password
  [ -s "$pw" ] || (umask 077; openssl rand -hex 24 > "$pw")
  as_postgres psql -tAc "SELECT 1 FROM pg_roles WHERE rolname='mlflow'" | grep -q 1 \
    || as_postgres psql -q -c "CREATE ROLE mlflow LOGIN"
  # the file is the truth, even for a role left by an earlier head; through stdin, so not in `ps`
  as_postgres psql -q -f - <<< "ALTER ROLE mlflow PASSWORD '$(cat "$pw")'"
  as_postgres psql -tAc "SELECT 1 FROM pg_database WHERE datname='mlflow'" | grep -q 1 \
    || as_postgres createdb -O mlflow mlflow
  MATSCALE_MLFLOW_DB="postgresql://mlflow:$(cat "$pw")@127.0.0.1:5432/mlflow"
fi
export MLFLOW_BACKEND_STORE_URI=$MATSCALE_MLFLOW_DB  # read by mlflow from the environment: not in `ps`
python3 -m pip install -q "psycopg[binary]"
if [ "$auth" = --auth ]; then  # MLflow basic auth: its extras, and a CSRF secret kept in ~/.matscale (mode 600)
  python3 -m pip install -q "mlflow[auth]"
  [ -s ~/.matscale/flask-secret ] || (umask 077; openssl rand -hex 32 > ~/.matscale/flask-secret)
  export MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat ~/.matscale/flask-secret)
fi
# a private address is not loopback: matscale server wants --public, and --auth or an explicit --no-auth
nohup matscale server --host "$host" --public --port "$port" \
  --artifacts-destination "${artifacts:-$MATSCALE_SHARED/matscale/mlartifacts}" $auth \
  > ~/.matscale/mlflow.log 2>&1 &
for _ in $(seq 60); do curl -sf "http://$host:$port/health" >/dev/null && break; sleep 1; done
curl -sf "http://$host:$port/health" >/dev/null || { tail -20 ~/.matscale/mlflow.log; exit 1; }
echo "MLflow tracking server on http://$host:$port (log ~/.matscale/mlflow.log)"
