#!/usr/bin/env bash
# Install lepton-edge as a systemd service from a checkout of this repository.
#
#   sudo deploy/install.sh [--preset security-camera|factory-line | --config FILE] [--extras LIST]
#                          [--jetson] [--no-openvino] [--prefix /opt/lepton-edge] [--dry-run]
#
# The pip extras follow the config: each section of it that needs an optional package (see
# EXTRA_FOR_KEY) adds its extra, so a preset with `metrics:` gets prometheus_client and the
# service does not exit on its first start. OpenVINO is added on x86_64 and aarch64 (what
# `backend: auto` picks on a CPU box). --extras adds more.
#
# Safe to run again (upgrade, change of extras): every step checks what is already there.
# The config in /etc/lepton-edge/config.yaml is installed only when absent and never
# overwritten. --dry-run prints the plan without changing anything and works without root.
set -euo pipefail

readonly SERVICE_USER=lepton-edge
readonly STATE_DIR=/var/lib/lepton-edge
readonly CONFIG_DIR=/etc/lepton-edge
readonly UNIT_DIR=/etc/systemd/system
# The prefix the unit files are written for; rewritten in the installed copies if --prefix
# differs.
readonly DEFAULT_PREFIX=/opt/lepton-edge

# Config section -> the pip extra it needs, one `key extra` or `key=value extra` per line:
# `metrics metrics` means "a top-level metrics: key needs [metrics]"; `backend=openvino
# openvino` means "backend: openvino needs [openvino]". A new optional sink is one more line.
readonly EXTRA_FOR_KEY='
metrics metrics
mqtt mqtt
http http
backend=openvino openvino
cameras.track analysis
cameras.zones analysis
cameras.lines analysis
cameras.events analysis
cameras.motion analysis
cameras.detect analysis
cameras.inspect plc
'
# Architectures where `backend: auto` wants OpenVINO (PyPI has wheels for both).
readonly OPENVINO_ARCHES='x86_64 aarch64'

SRC_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
readonly SRC_DIR

PRESET=security-camera
CONFIG_FILE=
PREFIX=$DEFAULT_PREFIX
EXTRAS=
JETSON=0
OPENVINO=1
ARCH=$(uname -m)
DRY_RUN=0
PYTHON=python3

usage() {
    cat <<EOF
Usage: $(basename -- "$0") [options]

Installs lepton-edge from this checkout ($SRC_DIR) as a systemd service.

Options:
  --preset NAME     config installed when $CONFIG_DIR/config.yaml is absent:
                    security-camera (default) or factory-line
  --config FILE     your own config to install instead of a preset (same rules: only when
                    $CONFIG_DIR/config.yaml is absent)
  --extras LIST     more pip extras, comma-separated (e.g. compile, or tensorrt); those
                    the config needs (metrics: -> metrics, ...) are added by themselves
  --jetson          create the venv with --system-site-packages so JetPack's tensorrt
                    and pycuda (apt packages) are importable; see deploy/JETSON.md
  --no-openvino     do not add the openvino extra (added by default on x86_64, aarch64)
  --arch NAME       the machine's architecture (default: uname -m, here $ARCH)
  --prefix DIR      install root for the virtualenv (default $DEFAULT_PREFIX)
  --python EXE      interpreter for the virtualenv (default python3)
  --dry-run         print what would be done; changes nothing, needs no root
  -h, --help        this text
EOF
}

die() {
    printf 'install.sh: error: %s\n' "$*" >&2
    exit 2
}

note() {
    printf '# %s\n' "$*"
}

# Runs a command, or only prints it under --dry-run. Every change to the system goes
# through here, so the dry-run plan is exactly what a real run does.
run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    if [[ $DRY_RUN -eq 0 ]]; then
        "$@"
    fi
}

parse_args() {
    while [[ $# -gt 0 ]]; do
        case $1 in
            --preset) [[ $# -ge 2 ]] || die "--preset needs a value"; PRESET=$2; shift 2 ;;
            --preset=*) PRESET=${1#*=}; shift ;;
            --config) [[ $# -ge 2 ]] || die "--config needs a value"; CONFIG_FILE=$2; shift 2 ;;
            --config=*) CONFIG_FILE=${1#*=}; shift ;;
            --extras) [[ $# -ge 2 ]] || die "--extras needs a value"; EXTRAS=$2; shift 2 ;;
            --extras=*) EXTRAS=${1#*=}; shift ;;
            --prefix) [[ $# -ge 2 ]] || die "--prefix needs a value"; PREFIX=$2; shift 2 ;;
            --prefix=*) PREFIX=${1#*=}; shift ;;
            --python) [[ $# -ge 2 ]] || die "--python needs a value"; PYTHON=$2; shift 2 ;;
            --python=*) PYTHON=${1#*=}; shift ;;
            --arch) [[ $# -ge 2 ]] || die "--arch needs a value"; ARCH=$2; shift 2 ;;
            --arch=*) ARCH=${1#*=}; shift ;;
            --jetson) JETSON=1; shift ;;
            --no-openvino) OPENVINO=0; shift ;;
            --dry-run) DRY_RUN=1; shift ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; die "unknown argument '$1'" ;;
        esac
    done

    case $PRESET in
        security-camera | factory-line) ;;
        *) die "unknown preset '$PRESET' (expected security-camera or factory-line)" ;;
    esac
    if [[ -n $CONFIG_FILE ]]; then
        [[ -f $CONFIG_FILE && -r $CONFIG_FILE ]] || die "--config $CONFIG_FILE: no such file"
        CONFIG_FILE=$(cd -- "$(dirname -- "$CONFIG_FILE")" && pwd)/$(basename -- "$CONFIG_FILE")
    else
        [[ -f $SRC_DIR/deploy/$PRESET.yaml ]] || die "preset file deploy/$PRESET.yaml is missing"
        CONFIG_FILE=$SRC_DIR/deploy/$PRESET.yaml
    fi
    # Extras go into a pip requirement string: letters, digits, '-', '_', ',' only.
    if [[ -n $EXTRAS && ! $EXTRAS =~ ^[A-Za-z0-9_-]+(,[A-Za-z0-9_-]+)*$ ]]; then
        die "--extras must be a comma-separated list of names, got '$EXTRAS'"
    fi
    [[ $PREFIX == /* ]] || die "--prefix must be an absolute path, got '$PREFIX'"
    PREFIX=${PREFIX%/}
    case $PREFIX in
        /home/* | /root/* | /run/user/*)
            die "--prefix $PREFIX is hidden from the service by ProtectHome=yes" ;;
    esac
}

check_environment() {
    if [[ $DRY_RUN -eq 1 ]]; then
        note "dry run: nothing is changed"
    elif [[ $(id -u) -ne 0 ]]; then
        die "run as root (or use --dry-run to see the plan)"
    fi
    if [[ ! -f $SRC_DIR/pyproject.toml && ! -f $SRC_DIR/setup.py ]]; then
        [[ $DRY_RUN -eq 1 ]] || die "$SRC_DIR is not a lepton-edge checkout (no pyproject.toml)"
        note "warning: no pyproject.toml in $SRC_DIR; pip install would fail"
    fi
    check_python
}

# `python3 -m venv` needs ensurepip, which Debian and Ubuntu ship separately (python3-venv);
# without it the venv step fails after the user and directories exist. Checked before any
# change, in a dry run too: a plan that would fail is worth knowing about.
check_python() {
    command -v "$PYTHON" >/dev/null || die "--python $PYTHON: no such interpreter; install python3"
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        local version
        version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) ||
            version=3
        die "$PYTHON cannot create a virtualenv (no ensurepip): install it with" \
            "apt-get install python3-venv (or python$version-venv), then run this again"
    fi
}

# The config whose extras are installed: the one already in place (it is kept), else the
# preset (or --config file) that is about to be installed.
config_in_use() {
    if [[ -r $CONFIG_DIR/config.yaml ]]; then
        echo "$CONFIG_DIR/config.yaml"
    else
        echo "$CONFIG_FILE"
    fi
}

# Prints `extra reason` lines for what the config file $1 needs, following EXTRA_FOR_KEY.
# Reads top-level keys (`key: value` at column 0) and, as `cameras.KEY`, the keys of camera
# entries (indented, `- key:` or `key:`); a key set to null (metrics: null) is off.
config_extras() {
    local file=$1 line key value pattern extra
    while IFS= read -r line || [[ -n $line ]]; do  # also a last line with no newline
        line=${line%$'\r'}  # a file saved with CRLF endings
        if [[ $line =~ ^[[:space:]]+(-[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*):[[:space:]]*([^#]*) ]]
        then
            line="cameras.${BASH_REMATCH[2]}: ${BASH_REMATCH[3]}"
        fi
        [[ $line =~ ^([A-Za-z_][A-Za-z0-9_.]*):[[:space:]]*([^#]*) ]] || continue
        key=${BASH_REMATCH[1]}
        value=${BASH_REMATCH[2]%"${BASH_REMATCH[2]##*[![:space:]]}"}
        value=${value//\"/}
        value=${value//\'/}
        [[ $value == null || $value == '~' ]] && continue
        while read -r pattern extra; do
            [[ -n $pattern ]] || continue
            if [[ $pattern == "$key" || $pattern == "$key=$value" ]]; then
                echo "$extra ${pattern/=/: }"
            fi
        done <<<"$EXTRA_FOR_KEY"
    done <"$file"
}

# EXTRAS becomes the user's --extras plus what the config and the machine need, without
# repeats, in that order; each added one is reported with its reason.
resolve_extras() {
    local config extra reason
    config=$(config_in_use)
    local -a found=()
    while read -r extra reason; do
        found+=("$extra" "$reason: in $config")
    done < <(config_extras "$config")
    if [[ $OPENVINO -eq 0 ]]; then
        note "openvino not added (--no-openvino): backend: auto falls back to ONNX Runtime"
    elif [[ $JETSON -eq 1 ]]; then
        note "openvino not added: on Jetson backend: auto picks TensorRT (JetPack)"
    elif [[ " $OPENVINO_ARCHES " == *" $ARCH "* ]]; then
        found+=(openvino "backend: auto on $ARCH")
    else
        note "openvino not added: no wheels for $ARCH; backend: auto uses ONNX Runtime"
    fi
    local i
    for ((i = 0; i < ${#found[@]}; i += 2)); do
        extra=${found[i]}
        if [[ ,$EXTRAS, != *,$extra,* ]]; then
            EXTRAS=${EXTRAS:+$EXTRAS,}$extra
            note "extra $extra (${found[i + 1]})"
        fi
    done
}

create_user() {
    if getent passwd "$SERVICE_USER" >/dev/null; then
        note "user $SERVICE_USER exists"
    else
        # A system account whose home is the state directory: libraries that insist on
        # ~/.cache (CUDA, OpenVINO) then write where the service is allowed to.
        run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "lepton-edge inference daemon" "$SERVICE_USER"
    fi
    # video: V4L2 cameras, Jetson nvhost nodes; render: DRI render nodes. The unit grants
    # them too (SupplementaryGroups=); membership here also lets `sudo -u lepton-edge
    # lepton-edge bench` reach the same devices.
    local group
    for group in video render; do
        if ! getent group "$group" >/dev/null; then
            # The unit's SupplementaryGroups= names both; a missing group would make every
            # start fail with 216/GROUP. udev assigns the nodes by group name, so creating
            # it is what systemd-sysusers does on a full install anyway.
            run groupadd --system "$group"
            run usermod --append --groups "$group" "$SERVICE_USER"
        elif id -nG "$SERVICE_USER" 2>/dev/null | tr ' ' '\n' | grep -qx "$group"; then
            note "user $SERVICE_USER is in group $group"
        else
            run usermod --append --groups "$group" "$SERVICE_USER"
        fi
    done
}

install_venv() {
    local venv=$PREFIX/venv
    local -a venv_args=()
    if [[ $JETSON -eq 1 ]]; then
        # JetPack installs tensorrt and pycuda as apt packages into the system Python;
        # they are not on PyPI for Jetson, so the venv has to see the system site-packages.
        venv_args+=(--system-site-packages)
    fi
    run install -d -m 0755 "$PREFIX"
    # Re-running venv on an existing one keeps its packages and rewrites pyvenv.cfg, so
    # adding or dropping --jetson on a later run takes effect.
    run "$PYTHON" -m venv "${venv_args[@]}" "$venv"
    if [[ $JETSON -eq 1 && ,$EXTRAS, == *,tensorrt,* ]]; then
        note "warning: on Jetson, TensorRT comes from JetPack (python3-libnvinfer), not pip"
    fi
    local target=$SRC_DIR
    if [[ -n $EXTRAS ]]; then
        target="${SRC_DIR}[${EXTRAS}]"
    fi
    local -a pins=()
    if [[ $JETSON -eq 1 ]]; then
        # JetPack's python3 modules (cv2, tensorrt, pycuda) are built against NumPy 1.x and
        # fail to import next to NumPy 2 from PyPI.
        pins+=("numpy<2")
    fi
    # A regular (not editable) install: the service must not depend on the checkout
    # staying where it is. --upgrade reinstalls when the checkout changed.
    run "$venv/bin/pip" install --upgrade --no-input "$target" "${pins[@]}"
    if [[ $JETSON -eq 1 ]]; then
        use_jetpack_opencv "$venv"
    fi
}

# The opencv-python-headless wheel that pip installs has no GStreamer, so CSI cameras
# (nvarguscamerasrc) and hardware decoding (nvv4l2decoder) are out of reach. JetPack's own
# OpenCV has it; when the system Python's cv2 does, remove the wheel from the venv so that
# one is imported instead (pip check will then report the wheel as missing; that is expected).
use_jetpack_opencv() {
    local venv=$1
    local probe='import re, sys, cv2
sys.exit(0 if re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()) else 1)'
    if "$PYTHON" -c "$probe" 2>/dev/null; then
        note "system OpenCV has GStreamer: the venv uses it instead of the PyPI wheel"
        run "$venv/bin/pip" uninstall --yes opencv-python-headless opencv-python
    else
        note "warning: the system OpenCV lacks GStreamer (or is missing); CSI cameras and"
        note "  nvv4l2decoder pipelines will not open. Install JetPack's OpenCV (nvidia-opencv)."
    fi
}

install_engine() {
    local src=$SRC_DIR/engines/yolov8n
    local dst=$STATE_DIR/engines/yolov8n
    run install -d -m 0755 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE_DIR" "$STATE_DIR/engines"
    if [[ ! -d $src ]]; then
        note "warning: no bundled model at engines/yolov8n; put an artifact in $dst yourself"
        return
    fi
    # Copy next to the target, then swap: a daemon starting meanwhile sees the old or the
    # new artifact, never half of one. Engines built from it live in the cache elsewhere
    # in $STATE_DIR and are not touched.
    run rm -rf "$dst.new"
    run cp -R "$src" "$dst.new"
    run chown -R "$SERVICE_USER:$SERVICE_USER" "$dst.new"
    run chmod -R u+rwX,go+rX,go-w "$dst.new"
    run rm -rf "$dst"
    run mv "$dst.new" "$dst"
}

install_config() {
    local config=$CONFIG_DIR/config.yaml
    run install -d -m 0755 "$CONFIG_DIR"
    if [[ -e $config ]]; then
        note "keeping existing $config ($CONFIG_FILE not installed)"
    else
        # Readable by the service group only: configs carry camera URLs with passwords.
        run install -m 0640 -o root -g "$SERVICE_USER" "$CONFIG_FILE" "$config"
    fi
}

install_units() {
    local unit
    for unit in lepton-edge.service lepton-edge@.service; do
        if [[ $PREFIX == "$DEFAULT_PREFIX" ]]; then
            run install -m 0644 "$SRC_DIR/systemd/$unit" "$UNIT_DIR/$unit"
        else
            note "writing $UNIT_DIR/$unit with ExecStart under $PREFIX"
            printf '+ sed %q %q > %q\n' "s#$DEFAULT_PREFIX/#$PREFIX/#g" \
                "$SRC_DIR/systemd/$unit" "$UNIT_DIR/$unit"
            if [[ $DRY_RUN -eq 0 ]]; then
                sed "s#$DEFAULT_PREFIX/#$PREFIX/#g" "$SRC_DIR/systemd/$unit" >"$UNIT_DIR/$unit"
                chmod 0644 "$UNIT_DIR/$unit"
            fi
        fi
    done
    if [[ -d /run/systemd/system ]]; then
        run systemctl daemon-reload
    else
        note "systemd is not running here; run 'systemctl daemon-reload' on the target"
    fi
}

main() {
    parse_args "$@"
    check_environment
    resolve_extras
    note "source: $SRC_DIR, preset: $PRESET, prefix: $PREFIX, extras: ${EXTRAS:-none}," \
        "jetson: $([[ $JETSON -eq 1 ]] && echo yes || echo no)"
    create_user
    install_venv
    install_engine
    install_config
    install_units
    echo
    if [[ $DRY_RUN -eq 1 ]]; then
        echo "Dry run finished; after a real run, review $CONFIG_DIR/config.yaml and start with:"
    else
        echo "lepton-edge is installed. Review $CONFIG_DIR/config.yaml, then start it with:"
    fi
    echo "  systemctl enable --now lepton-edge"
    echo "and follow it with: journalctl -u lepton-edge -f"
}

main "$@"
