#!/usr/bin/env bash
# Set up a development environment for napari-addunet, from nothing or from a partial state.
#
#   scripts/setup.sh            (also run by `make setup`, `make demo`, `make test` and CI)
#
# Steps, each skipped when already done:
#   1. system libraries for a headless napari viewer (Xvfb, Mesa, Qt's xcb libraries),
#      through apt-get when it is available and we are root or have password-less sudo;
#   2. a virtual environment in .venv;
#   3. PyTorch: the CPU build when no NVIDIA GPU answers, the default (CUDA) build otherwise;
#   4. the package itself, editable, with the `testing` extra.
#
# Environment variables:
#   PYTHON           interpreter used to create .venv (default: python3)
#   VENV             virtual environment folder (default: .venv)
#   TORCH_SPEC       requirement for torch (default: torch==2.13.0 for CPU, torch with a GPU)
#   TORCH_INDEX_URL  index to take torch from; skips the automatic CPU/CUDA choice
#   SKIP_APT=1       never touch system packages
#   FORCE=1          redo the Python steps even if the stamp says they are done
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
STAMP=".setup-stamp"
CPU_INDEX_URL="https://download.pytorch.org/whl/cpu"
DEFAULT_CPU_TORCH="torch==2.13.0"

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# --------------------------------------------------------------------------- 1. system packages
APT_PACKAGES=(
    xvfb xauth
    libgl1-mesa-dri libglx-mesa0 libegl1
    libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
    libxcb-render-util0 libxcb-xinerama0 libxcb-xinput0 libxcb-xfixes0 libxcb-shape0
    libxcb-cursor0 libdbus-1-3 libfontconfig1
)
# Optional: a small real data set for classification experiments; its absence is fine.
APT_OPTIONAL=(dataset-fashion-mnist)

missing_debs() {
    local pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
            printf '%s\n' "$pkg"
        fi
    done
}

install_system_packages() {
    if [[ "${SKIP_APT:-0}" == "1" ]]; then
        log "SKIP_APT=1: not checking system packages"
        return
    fi
    if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
        log "no apt-get here: install Xvfb, Mesa (OpenGL) and Qt's xcb libraries yourself for the viewer tests"
        return
    fi
    local -a missing optional=() sudo_cmd=()
    # Optional packages are tried once per environment, not on every run.
    local optional_tried="$VENV/.apt-optional-tried"
    mapfile -t missing < <(missing_debs "${APT_PACKAGES[@]}")
    if [[ ! -e "$optional_tried" ]]; then
        mapfile -t optional < <(missing_debs "${APT_OPTIONAL[@]}")
    fi
    if ((${#missing[@]} == 0 && ${#optional[@]} == 0)); then
        return
    fi
    if [[ "$(id -u)" != "0" ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo_cmd=(sudo -n)
        else
            if ((${#missing[@]} > 0)); then
                log "missing system packages (need root to install): ${missing[*]}"
            fi
            return
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    log "installing system packages: ${missing[*]}${missing[*]:+ }${optional[*]}"
    "${sudo_cmd[@]}" apt-get update -qq
    if ((${#missing[@]} > 0)); then
        "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if ((${#optional[@]} > 0)); then
        "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${optional[@]}" >/dev/null 2>&1 ||
            log "optional package(s) not available, continuing without: ${optional[*]}"
        mkdir -p "$VENV" && touch "$optional_tried"
    fi
}

# --------------------------------------------------------------------------- 2. virtual environment
make_venv() {
    if [[ -x "$VENV/bin/python" ]]; then
        return
    fi
    command -v "$PYTHON" >/dev/null 2>&1 || die "no '$PYTHON' found; set PYTHON to a Python >= 3.10"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
        die "$PYTHON is $("$PYTHON" -V 2>&1); napari-addunet needs Python >= 3.10"
    log "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
}

# --------------------------------------------------------------------------- 3. PyTorch
has_nvidia_gpu() {
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1
}

# Print the file name pip would install for a requirement, without installing anything.
pip_choice() {
    "$VENV/bin/python" -m pip install --dry-run --quiet --no-deps --report - "$1" 2>/dev/null |
        "$VENV/bin/python" -c '
import json, sys, urllib.parse
report = json.load(sys.stdin)
print(" ".join(urllib.parse.unquote(item["download_info"]["url"].rsplit("/", 1)[-1]) for item in report["install"]))
' 2>/dev/null || true
}

install_torch() {
    if "$VENV/bin/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)'; then
        return
    fi
    local pip=("$VENV/bin/python" -m pip install --quiet)
    if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
        local spec="${TORCH_SPEC:-torch}"
        log "installing $spec from $TORCH_INDEX_URL"
        "${pip[@]}" --index-url "$TORCH_INDEX_URL" "$spec"
    elif has_nvidia_gpu; then
        local spec="${TORCH_SPEC:-torch}"
        log "NVIDIA GPU found: installing $spec (CUDA build)"
        "${pip[@]}" "$spec"
    else
        local spec="${TORCH_SPEC:-$DEFAULT_CPU_TORCH}" choice
        choice="$(pip_choice "$spec")"
        if [[ "$choice" == *"+cpu"* ]]; then
            log "no NVIDIA GPU: installing $spec, CPU build found by pip ($choice)"
            "${pip[@]}" "$spec"
        else
            log "no NVIDIA GPU: installing $spec, CPU build from $CPU_INDEX_URL"
            "${pip[@]}" --index-url "$CPU_INDEX_URL" "$spec"
        fi
    fi
    "$VENV/bin/python" -W ignore -c 'import torch; print("[setup] torch", torch.__version__, "CUDA" if torch.cuda.is_available() else "CPU")' >&2
}

# --------------------------------------------------------------------------- 4. the package
stamp_key() {
    {
        cat pyproject.toml scripts/setup.sh
        "$VENV/bin/python" -VV
        printf '%s\n' "$PWD" "${TORCH_SPEC:-}" "${TORCH_INDEX_URL:-}"
    } | sha256sum | cut -d' ' -f1
}

install_package() {
    local key
    key="$(stamp_key)"
    if [[ "${FORCE:-0}" != "1" && -f "$STAMP" && "$(cat "$STAMP")" == "$key" ]]; then
        return
    fi
    log "installing napari-addunet (editable) with the testing extra"
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install --quiet -e ".[testing]"
    printf '%s\n' "$key" >"$STAMP"
}

install_system_packages
make_venv
install_torch
install_package
log "ready: $VENV"
