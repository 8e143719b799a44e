#!/usr/bin/env bash
# Installs everything resnet-viz needs on a fresh Debian/Ubuntu machine, and
# does nothing twice: Graphviz (for SVG/PNG/PDF diagram files), a virtual
# environment in .venv, and the Python packages (--dev adds Chromium, which the
# tests use to draw static chart images).
#
#   bash scripts/setup.sh          # what the app and the CLI need
#   bash scripts/setup.sh --dev    # plus what the tests and benchmarks need
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    *) echo "setup.sh: unknown option $arg (use --dev)" >&2; exit 2 ;;
  esac
done

say() { printf '==> %s\n' "$*"; }

# -- system packages --------------------------------------------------------
packages=()
command -v dot >/dev/null 2>&1 || packages+=(graphviz)
# the tests also draw static chart images, which need a browser
[ "$dev" = 1 ] && ! command -v chromium >/dev/null 2>&1 && packages+=(chromium)
if ((${#packages[@]})); then
  if [ "$(id -u)" = 0 ]; then sudo=(); elif command -v sudo >/dev/null 2>&1; then sudo=(sudo); else sudo=(none); fi
  if [ "${sudo[0]:-}" = none ] || ! command -v apt-get >/dev/null 2>&1; then
    say "cannot install ${packages[*]} here (needs apt-get and root): install them yourself"
    [ "$dev" = 1 ] && exit 1
  else
    say "installing ${packages[*]} (apt-get)"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  fi
fi

# -- Python -----------------------------------------------------------------
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
  echo "setup.sh: resnet-viz needs Python 3.10 or newer ($python is $("$python" --version 2>&1))" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$python" -m venv .venv
fi
requirements=requirements.txt
[ "$dev" = 1 ] && requirements=requirements-dev.txt
say "installing Python packages from $requirements"
PIP_DISABLE_PIP_VERSION_CHECK=1 .venv/bin/python -m pip install -q -r "$requirements"
say "ready"
