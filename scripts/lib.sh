# Shared helpers for scripts/run and scripts/test (sourced, not executed).

# Cargo builds into a directory outside the clone so rebuilds stay warm.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/restash-target}"

# Runs a command as root (directly when we are root, else through sudo).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs redis-server and redis-cli from Debian's packages when missing.
ensure_redis() {
  if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    return
  fi
  echo "==> installing redis-server from Debian's packages"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-server >/dev/null
  # The package starts a system service on 6379; restash's scripts use their own servers.
  as_root systemctl disable --now redis-server >/dev/null 2>&1 || true
}

# Makes a Python virtual environment at $1 unless a working one (with pip) is there;
# installs Debian's python3-venv first when python3 has no ensurepip.
ensure_venv() {
  if [ -x "$1/bin/pip" ]; then
    return
  fi
  if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    echo "==> installing python3-venv from Debian's packages"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >/dev/null
  fi
  # A half-made environment (an earlier failure) is made again.
  rm -rf "$1"
  python3 -m venv "$1"
}

# Prints a free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until redis on port $1 answers PING (5 s at most).
wait_for_redis() {
  for _ in $(seq 1 100); do
    if [ "$(redis-cli -p "$1" PING 2>/dev/null)" = "PONG" ]; then return 0; fi
    sleep 0.05
  done
  echo "redis-server on port $1 did not start" >&2
  return 1
}
