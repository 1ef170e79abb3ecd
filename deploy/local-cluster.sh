#!/usr/bin/env bash
# The standard cluster on one machine (BENCHMARKS.md): one PostgreSQL, `chatd mock-llm`,
# 2 × `chatd api` and 2 × `chatd worker`, each a separate process on loopback, assembled from
# the command-line contract only (no `chatd dev`). Ctrl-C stops everything.
#
#   deploy/local-cluster.sh                 # build (release) and run
#   CLUSTER_BIN=target/debug/chatd deploy/local-cluster.sh
#
# Environment: CLUSTER_DIR (default .chatd-cluster), API_PORTS (default "8080 8081"),
# WORKERS (default 2), MOCK_PORT (default 9090), PG_PORT (default 15432: below the ephemeral
# port range, so the thousands of client connections of a load test cannot be holding it
# when a cluster starts right after one),
# PG_STAT_STATEMENTS=1 to enable pg_stat_statements (for B4), PG_AUTO_EXPLAIN_MS=N to log
# the plan (with actual rows) of every statement slower than N ms to pg/postgres.log (to find
# which plan made a statement slow), PG_SSL=1 for PostgreSQL over TLS
# (a self-signed certificate; every URL says sslmode=require), WORKER_ARGS and API_ARGS (extra
# flags), DATABASE_POOLER=transaction (API replicas and workers run their pools as if behind a
# transaction-mode pooler — unnamed statements — with the database URL as the direct URL).
# CHATD_* variables in the environment reach every chatd process.
# Worker i serves /metrics on 127.0.0.1:910i.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cluster_dir=${CLUSTER_DIR:-.chatd-cluster}
api_ports=${API_PORTS:-"8080 8081"}
workers=${WORKERS:-2}
mock_port=${MOCK_PORT:-9090}
pg_port=${PG_PORT:-15432}
bin=${CLUSTER_BIN:-target/release/chatd}

if [ -z "${CLUSTER_BIN:-}" ]; then
    echo "==> building chatd (release)"
    cargo build --release --quiet
fi

bindir=$(pg_config --bindir 2>/dev/null || true)
if [ ! -x "$bindir/initdb" ]; then
    bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
if [ ! -x "$bindir/initdb" ]; then
    echo "error: PostgreSQL server binaries not found; install them with: apt-get install -y postgresql postgresql-contrib" >&2
    exit 1
fi

mkdir -p "$cluster_dir"
cluster_dir=$(cd "$cluster_dir" && pwd)
data_dir=$cluster_dir/pg
as_pg() {
    # initdb and postgres refuse to run as root: use the postgres OS user then.
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ ! -f "$data_dir/PG_VERSION" ]; then
    echo "==> initdb $data_dir"
    mkdir -p "$data_dir"
    [ "$(id -u)" = 0 ] && chown postgres "$data_dir"
    as_pg "$bindir/initdb" -D "$data_dir" -U chatd --auth=trust -E UTF8 --locale=C >/dev/null
fi
ssl_options=""
url_options=""
if [ "${PG_SSL:-0}" = 1 ]; then
    if [ ! -f "$data_dir/server.crt" ]; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
            -subj /CN=127.0.0.1 -keyout "$data_dir/server.key" -out "$data_dir/server.crt" 2>/dev/null
        chmod 600 "$data_dir/server.key"
        [ "$(id -u)" = 0 ] && chown postgres "$data_dir/server.key" "$data_dir/server.crt"
    fi
    ssl_options="-c ssl=on -c ssl_cert_file=$data_dir/server.crt -c ssl_key_file=$data_dir/server.key"
    url_options="?sslmode=require"
fi
preload=""
libraries=""
[ "${PG_STAT_STATEMENTS:-0}" = 1 ] && libraries=pg_stat_statements && preload="-c pg_stat_statements.track_utility=off"
if [ -n "${PG_AUTO_EXPLAIN_MS:-}" ]; then
    libraries=${libraries:+$libraries,}auto_explain
    preload="$preload -c auto_explain.log_min_duration=${PG_AUTO_EXPLAIN_MS}ms -c auto_explain.log_analyze=on -c auto_explain.log_timing=off -c auto_explain.log_nested_statements=on"
fi
[ -n "$libraries" ] && preload="-c shared_preload_libraries=$libraries $preload"
echo "==> starting PostgreSQL on 127.0.0.1:$pg_port"
as_pg "$bindir/pg_ctl" -D "$data_dir" -w -l "$data_dir/postgres.log" \
    -o "-p $pg_port -k $data_dir -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off $preload $ssl_options" start >/dev/null
database_url="postgres://chatd@127.0.0.1:$pg_port/chatd$url_options"
psql "postgres://chatd@127.0.0.1:$pg_port/postgres$url_options" -qtAc "SELECT 1 FROM pg_database WHERE datname = 'chatd'" | grep -q 1 ||
    psql "postgres://chatd@127.0.0.1:$pg_port/postgres$url_options" -qc "CREATE DATABASE chatd"
[ "${PG_STAT_STATEMENTS:-0}" = 1 ] && psql "$database_url" -qc "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"

pids=()
cleanup() {
    echo "==> stopping"
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    as_pg "$bindir/pg_ctl" -D "$data_dir" -m fast -w stop >/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$bin" migrate --database-url "$database_url"
"$bin" mock-llm --addr "127.0.0.1:$mock_port" >"$cluster_dir/mock-llm.log" 2>&1 &
pids+=($!)
if ! psql "$database_url" -qtAc "SELECT 1 FROM model_configs WHERE is_default" | grep -q 1; then
    provider=$("$bin" admin create-provider --database-url "$database_url" --kind openai-compatible --base-url "http://127.0.0.1:$mock_port/v1")
    "$bin" admin create-model --database-url "$database_url" --provider "$provider" --model mock --default >/dev/null
fi
psql "$database_url" -qtAc "SELECT 1 FROM users WHERE username = 'admin'" | grep -q 1 ||
    "$bin" admin create-user --database-url "$database_url" --username admin --admin >/dev/null
token=$("$bin" admin create-token --database-url "$database_url" --username admin)

pooler_args=""
if [ -n "${DATABASE_POOLER:-}" ]; then
    pooler_args="--database-pooler $DATABASE_POOLER --listen-database-url $database_url"
fi
urls=()
for port in $api_ports; do
    # shellcheck disable=SC2086
    "$bin" api --database-url "$database_url" --addr "127.0.0.1:$port" $pooler_args ${API_ARGS:-} \
        >"$cluster_dir/api-$port.log" 2>&1 &
    pids+=($!)
    urls+=("http://127.0.0.1:$port")
done
for index in $(seq 1 "$workers"); do
    # shellcheck disable=SC2086
    "$bin" worker --database-url "$database_url" --metrics-addr "127.0.0.1:$((9100 + index))" \
        $pooler_args ${WORKER_ARGS:-} >"$cluster_dir/worker-$index.log" 2>&1 &
    pids+=($!)
done
for url in "${urls[@]}"; do
    for _ in $(seq 1 100); do
        curl -fsS "$url/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
done

cat <<TXT

standard cluster is running (logs in $cluster_dir)
  API replicas: ${urls[*]}
  database:     $database_url
  token:        $token

  export CHATD_URL=${urls[0]} CHATD_TOKEN=$token
  $bin chat "hello"
  $bin scaletest --api $(IFS=,; echo "${urls[*]}") --database-url $database_url --chats 200 --turns 5

Ctrl-C stops everything.
TXT
echo "$token" >"$cluster_dir/token"
echo "$database_url" >"$cluster_dir/database-url"
wait -n "${pids[@]}" || true
