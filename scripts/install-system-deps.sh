#!/usr/bin/env bash
# Installs the Debian packages the tests need beyond the Python venv:
#   - the GStreamer RTSP server used by tests/faults/rtsp_server.py (run with /usr/bin/python3),
#   - systemd, for `systemd-analyze verify` of the shipped unit,
#   - Mosquitto, the MQTT broker tests/sinks/test_mqtt.py starts on a loopback port,
#   - Chromium, which loads the live page headless in tests/sinks/http/test_live_page.py.
# The README's Node.js example test needs node/npm (not installed here) and
# scripts/install-node-deps.sh.
#   - a C compiler, for the stub libraries the TensorRT API conformance test imports over.
# Idempotent: when everything is present it only asks dpkg and exits (no network).
# Not root and something missing: says what to run and exits 0, and the tests that need the
# packages skip with the reason.
set -euo pipefail

PACKAGES=(
    python3-gi                    # `gi` for the Debian interpreter
    gir1.2-gst-rtsp-server-1.0    # GstRtspServer typelib (pulls in libgstrtspserver)
    gstreamer1.0-plugins-base     # decodebin, videoconvert, valve
    gstreamer1.0-plugins-good     # rtph264pay, avidemux, qtdemux, jpegdec
    gstreamer1.0-plugins-bad      # intervideosrc, intervideosink
    gstreamer1.0-plugins-ugly     # x264enc
    gstreamer1.0-libav            # avdec_* for the sample videos (MPEG-4 Part 2, H.264)
    systemd                       # systemd-analyze
    shellcheck                    # lint of deploy/install.sh
    mosquitto                     # MQTT broker (and mosquitto_passwd) for the MQTT bridge tests
    chromium                      # headless browser for the live page test
    gcc                           # cc -shared: scripts/trt_bindings.py's stub libnvinfer & co
)

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "install-system-deps: not a Debian-based system (no dpkg-query); skipping." \
         "Tests that need GStreamer's RTSP server or systemd-analyze will be skipped."
    exit 0
fi

missing=()
for package in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$package")
    fi
done
# systemd-analyze may come from elsewhere (a container image without the systemd package).
if command -v systemd-analyze >/dev/null 2>&1; then
    remaining=()
    for package in "${missing[@]}"; do
        [[ "$package" == systemd ]] || remaining+=("$package")
    done
    missing=("${remaining[@]}")
fi

if ((${#missing[@]} == 0)); then
    echo "install-system-deps: all present (${#PACKAGES[@]} packages)."
    exit 0
fi

install=(apt-get install -y --no-install-recommends "${missing[@]}")
if [[ $(id -u) -ne 0 ]]; then
    echo "install-system-deps: missing Debian packages: ${missing[*]}"
    echo "  As root, run: apt-get update && DEBIAN_FRONTEND=noninteractive ${install[*]}"
    echo "  (or: sudo bash scripts/install-system-deps.sh)."
    echo "  Until then the tests that need them are skipped with the reason."
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-system-deps: installing ${missing[*]}"
if ! { apt-get update -q && "${install[@]}"; }; then
    # Offline or a broken mirror: say so loudly, but let `make test` go on; the tests that
    # need these packages skip with the reason.
    echo "install-system-deps: FAILED to install ${missing[*]} (see apt-get's output above)." >&2
    echo "  The tests that need them will be skipped." >&2
fi
