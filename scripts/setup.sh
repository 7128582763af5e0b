#!/usr/bin/env bash
# One idempotent setup: installs what a fresh Debian 12 machine lacks, quietly and fast
# when everything is already there, then builds the workspace in release mode.
#   TORCH_VENV=/path   where the torch==2.11.0 venv lives (default /opt/torch-2.11.0-venv)
#   RAY_VENV=/path     where the Ray venv for deploy/ray lives (default /opt/ray-venv)
#   SETUP_NO_BUILD=1   install only, skip `cargo build --release`
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

APT_PACKAGES=(pkg-config g++ make libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-base-apps
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  gstreamer1.0-libav libjemalloc2 python3-venv ffmpeg procps
  slurm-wlm munge
  time bc)  # GNU /usr/bin/time and bc: benchmarks/image-memory.sh and temporal.sh use them

# The programs the code and the tests start, which the packages above (or Debian's essential
# ones) guarantee: checked on PATH after installing. tests/programs.rs fails naming any program
# the sources start that is not listed here (or in OPTIONAL_PROGRAMS).
PROGRAMS=(ffmpeg ffprobe gst-launch-1.0 gst-inspect-1.0 kill mkfifo sh timeout
  flock munged slurmctld slurmd sbatch squeue sinfo scontrol)
# Started only when present; the code works without them (nvidia-smi comes with the GPU driver).
OPTIONAL_PROGRAMS=(nvidia-smi)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for prog in "${PROGRAMS[@]}"; do
  command -v "$prog" >/dev/null || { echo "setup: $prog is not on PATH after installing ${APT_PACKAGES[*]}" >&2; exit 1; }
done

torch_ok() { "$TORCH_VENV/bin/python" -c 'import sys,torch; sys.exit(0 if torch.__version__.split("+")[0]=="2.11.0" else 1)' 2>/dev/null; }
if ! torch_ok; then
  echo "setup: installing torch==2.11.0 into $TORCH_VENV (about 2.6 GB, once)"
  python3 -m venv "$TORCH_VENV"
  "$TORCH_VENV/bin/pip" install -q --disable-pip-version-check torch==2.11.0 numpy
  torch_ok || { echo "setup: torch 2.11.0 did not install into $TORCH_VENV" >&2; exit 1; }
fi

# Ray from PyPI for deploy/ray/ and its test (one node on localhost).
RAY_VENV=${RAY_VENV:-/opt/ray-venv}
ray_ok() { "$RAY_VENV/bin/python" -c 'import sys,ray; sys.exit(0 if ray.__version__=="2.60.0" else 1)' 2>/dev/null; }
if ! ray_ok; then
  echo "setup: installing ray==2.60.0 into $RAY_VENV (once)"
  python3 -m venv "$RAY_VENV"
  "$RAY_VENV/bin/pip" install -q --disable-pip-version-check ray==2.60.0
  ray_ok || { echo "setup: ray 2.60.0 did not install into $RAY_VENV" >&2; exit 1; }
fi

if [ -z "${SETUP_NO_BUILD:-}" ]; then
  cargo build --release --quiet --workspace
fi
