# Helpers the test scripts share (sourced, not run): processes stopped on exit, free
# loopback ports, waiting for a server, and a moto emulator bound to this script's life.
# A sourcing script sets PY and `work` (a temporary directory) first.

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  exec 9>&- 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_ready() {
  for _ in $(seq 1 300); do
    if curl -fsS "$1/healthz" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "the server at $1 did not come up" >&2
  return 1
}

# Starts moto on a free port and sets moto_port. moto stops when its standard input closes:
# this script holds the writing end (fd 9), so however the script ends, moto ends with it.
start_moto() {
  moto_port=$(free_port)
  mkfifo "$work/moto.stdin"
  "$PY" scripts/moto_server.py "$moto_port" <"$work/moto.stdin" >"$work/moto.log" 2>&1 &
  pids+=($!)
  exec 9>"$work/moto.stdin"
  for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$moto_port/moto-api/" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "moto did not come up" >&2
  return 1
}
