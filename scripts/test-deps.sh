#!/usr/bin/env bash
# Makes sure the programs the tests need besides Go are installed:
#   chromium  the browser tests (headless Chromium)
#   nginx     the fail-over tests (with envsubst, as the nginx image renders
#             its templates)
#   node      the express example, the Node client (with openssl for its TLS
#             certificates) and the socket.io baseline
# Usage: scripts/test-deps.sh [chromium] [nginx] [node]   (default: all)
#
# A missing one is installed with apt-get when running as root on Debian,
# as CI does; anywhere else the script fails with one line saying what to
# run. It never lets the tests skip for want of one.
set -euo pipefail
[ $# -gt 0 ] || set -- chromium nginx node
for what in "$@"; do
  case $what in
    chromium | nginx | node) ;;
    *) echo "scripts/test-deps.sh: unknown program $what (want chromium, nginx or node)" >&2; exit 2 ;;
  esac
done

found() { # program: on the PATH, or in an sbin directory not on it
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ]
}
missing() { # what: the Debian packages it needs, if it is missing
  case $1 in
    chromium)
      if [ -n "${CHROME_BIN:-}" ] || found chromium || found chromium-browser || found google-chrome || found headless-shell; then return; fi
      echo chromium ;;
    nginx)
      found nginx || echo nginx
      found envsubst || echo gettext-base ;;
    node)
      { found node && found npm; } || echo "nodejs npm"
      found openssl || echo openssl ;;
  esac
}

pkgs=()
for what in "$@"; do
  # shellcheck disable=SC2207 # a list of package names, split on white space
  pkgs+=($(missing "$what"))
done
[ ${#pkgs[@]} -gt 0 ] || exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "the tests need ${pkgs[*]}, which are missing: run 'sudo apt-get install -y ${pkgs[*]}' (or your system's equivalent), then run the tests again" >&2
  exit 1
fi
echo "installing ${pkgs[*]} for the tests"
apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q "${pkgs[@]}" >/dev/null
for what in "$@"; do
  if [ -n "$(missing "$what")" ]; then
    echo "scripts/test-deps.sh: $what is still missing after apt-get install" >&2
    exit 1
  fi
done
