# Shared helpers for scripts/test and scripts/demo. Source it; do not run it.
# Every install step is idempotent: it checks first and installs only what is missing.

KW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KW_VENV="$KW_ROOT/.venv"
KW_MOTO_VERSION="5.2.5"
KW_LINT_VENV="$KW_ROOT/.venv-lint"
KW_CHECKOV_VERSION="3.3.30"
# cfn-lint checks deploy/cloudformation/*.yaml in scripts/test (pinned in tests/requirements.txt).
KW_CFN_LINT_VERSION="1.58.0"

kw_log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
kw_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# kw_ensure_apt PACKAGE... : installs the Debian packages that are not installed yet.
kw_ensure_apt() {
  local missing=()
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || kw_die "missing packages ${missing[*]} and no apt-get: install them by hand"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  kw_log "Installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq || kw_die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || kw_die "apt-get install ${missing[*]} failed"
}

# kw_ensure_venv : creates .venv with the pinned moto and cfn-lint unless they are already there.
kw_ensure_venv() {
  if [ -x "$KW_VENV/bin/python" ] && "$KW_VENV/bin/python" - "$KW_MOTO_VERSION" "$KW_CFN_LINT_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if (version("moto"), version("cfn-lint")) == (sys.argv[1], sys.argv[2]) else 1)
PY
  then
    return 0
  fi
  command -v python3 >/dev/null || kw_die "python3 is required (apt-get install python3 python3-venv)"
  if [ ! -x "$KW_VENV/bin/python" ]; then
    kw_log "Creating $KW_VENV"
    python3 -m venv "$KW_VENV" 2>/dev/null || {
      kw_ensure_apt python3-venv
      python3 -m venv "$KW_VENV" || kw_die "python3 -m venv failed"
    }
  fi
  kw_log "Installing moto $KW_MOTO_VERSION and cfn-lint $KW_CFN_LINT_VERSION into .venv (about 40 s the first time)"
  "$KW_VENV/bin/pip" install -q --disable-pip-version-check -r "$KW_ROOT/tests/requirements.txt" \
    || kw_die "pip install -r tests/requirements.txt failed"
}

# kw_ensure_lint_venv : creates .venv-lint with the pinned checkov (kept apart from .venv: its
# dependencies would move the ones moto is tested with). About a minute the first time.
kw_ensure_lint_venv() {
  if [ -x "$KW_LINT_VENV/bin/checkov" ] \
    && [ "$("$KW_LINT_VENV/bin/checkov" --version 2>/dev/null)" = "$KW_CHECKOV_VERSION" ]; then
    return 0
  fi
  kw_log "Installing checkov $KW_CHECKOV_VERSION into .venv-lint"
  [ -x "$KW_LINT_VENV/bin/python" ] || python3 -m venv "$KW_LINT_VENV" || kw_die "python3 -m venv failed"
  "$KW_LINT_VENV/bin/pip" install -q --disable-pip-version-check "checkov==$KW_CHECKOV_VERSION" \
    || kw_die "pip install checkov failed"
}

# kw_check_deploy : offline checks of deploy/ (scripts/test): the systemd unit verifies, the
# generated Kubernetes files are current, the manifests render and pass checkov, the Dockerfile
# passes checkov. Needs a built keywarden binary (systemd-analyze verify checks ExecStart).
kw_check_deploy() {
  local bin="${CARGO_TARGET_DIR:-$KW_ROOT/target}/debug/keywarden" tmp rc=0
  [ -x "$bin" ] || cargo build --locked --bin keywarden -q || return 1
  tmp="$(mktemp -d)"
  sed "s|/usr/local/bin/keywarden|$bin|g" "$KW_ROOT/deploy/systemd/keywarden.service" >"$tmp/keywarden.service"
  systemd-analyze verify "$tmp/keywarden.service" || { echo "systemd-analyze verify failed" >&2; rc=1; }
  "$KW_ROOT/scripts/gen-kubernetes" --check || rc=1
  if kubectl kustomize "$KW_ROOT/deploy/kubernetes" >"$tmp/rendered.yaml"; then
    "$KW_LINT_VENV/bin/checkov" -f "$tmp/rendered.yaml" --framework kubernetes --quiet --compact \
      --skip-download --config-file "$KW_ROOT/deploy/kubernetes/.checkov.yaml" || rc=1
  else
    echo "kubectl kustomize deploy/kubernetes failed" >&2; rc=1
  fi
  "$KW_LINT_VENV/bin/checkov" -f "$KW_ROOT/deploy/container/Dockerfile" --framework dockerfile \
    --quiet --compact --skip-download || rc=1
  rm -rf "$tmp"
  return $rc
}

# kw_start_moto PORT_VAR PID_VAR LOG : starts the launcher on a free loopback port.
kw_start_moto() {
  local __port_var=$1 __pid_var=$2 log=$3
  local fifo
  fifo="$(mktemp -u)"
  mkfifo "$fifo"
  "$KW_VENV/bin/python" "$KW_ROOT/tests/support/moto_server.py" --port 0 --quiet >"$fifo" 2>"$log" &
  local pid=$!
  local line=""
  read -r -t 30 line <"$fifo" || true
  rm -f "$fifo"
  case "$line" in
    KEYWARDEN-MOTO-READY\ port=*) ;;
    *) kill "$pid" 2>/dev/null; kw_die "the AWS emulator did not start; see $log" ;;
  esac
  printf -v "$__port_var" '%s' "${line#KEYWARDEN-MOTO-READY port=}"
  printf -v "$__pid_var" '%s' "$pid"
}
