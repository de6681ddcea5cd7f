# bench/redis.sh: a Redis of the benchmark's own, for the scripts that
# measure beside one (compare.sh, vs-redis.sh). Sourced, never run; the
# sourcing script defines die and log.
#
# start_redis DIR: starts $REDIS_SERVER (default redis-server) on a free
# port of 127.0.0.1, without persistence, its files and log in DIR, and
# waits (up to 10 s an attempt) until it answers. Sets REDIS_PID,
# REDIS_PORT and REDIS_VERSION. Debian's own Redis service, if any, is
# never touched.
# stop_redis: stops it (TERM, then KILL after 10 s); safe to call twice.

REDIS_PID=""
REDIS_PORT=""
REDIS_VERSION=""

# True when something accepts connections on 127.0.0.1:$1.
redis_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_redis() {
    local dir=$1 server=${REDIS_SERVER:-redis-server} attempt port i
    command -v "$server" >/dev/null || die "$server is missing"
    mkdir -p "$dir"
    for ((attempt = 0; attempt < 20; attempt++)); do
        port=$((20000 + RANDOM % 30000))
        redis_port_open "$port" && continue
        "$server" --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
            --dir "$dir" --logfile "$dir/redis.log" --daemonize no \
            --protected-mode yes --databases 1 >/dev/null 2>&1 &
        REDIS_PID=$!
        for ((i = 0; i < 100; i++)); do
            if redis_port_open "$port"; then
                REDIS_PORT=$port
                break 2
            fi
            kill -0 "$REDIS_PID" 2>/dev/null || break # lost a race for the port
            sleep 0.1
        done
        stop_redis
    done
    [[ -n $REDIS_PORT ]] ||
        die "$server did not start (its log: $(tail -n 3 "$dir/redis.log" 2>/dev/null))"
    REDIS_VERSION=$("$server" --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p')
    log "redis-server $REDIS_VERSION on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"
}

stop_redis() {
    local pid=$REDIS_PID i
    REDIS_PID=""
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}
