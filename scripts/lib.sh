# Shell helpers sourced by scripts/test and scripts/sam-build (never run alone).

step() { printf '\n==> %s\n' "$*"; }

need_apt() {
  local pkg=$1
  if [ "$(id -u)" = 0 ]; then
    step "installing $pkg (apt)"
    (apt-get install -y -qq "$pkg" >/dev/null 2>&1) || { apt-get update -qq >/dev/null && apt-get install -y -qq "$pkg" >/dev/null; }
  else
    echo "missing $pkg: run 'sudo apt-get install $pkg'" >&2
    exit 1
  fi
}

# A venv under the build cache holding the pinned Python tools of a requirements file
# (tools/requirements*.txt), installed when missing and again whenever the file changes.
python_tools() {
  local venv=$1 req=$2
  if [ -x "$venv/bin/pip" ] && cmp -s "$req" "$venv/.kareo-dock-requirements"; then
    return
  fi
  step "installing $(grep -v '^#' "$req" | tr '\n' ' ')into $venv"
  command -v python3 >/dev/null || need_apt python3
  if [ ! -x "$venv/bin/pip" ] && ! python3 -m venv "$venv" >/dev/null 2>&1; then
    need_apt python3-venv
    python3 -m venv --clear "$venv" >/dev/null
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  cp "$req" "$venv/.kareo-dock-requirements"
}

