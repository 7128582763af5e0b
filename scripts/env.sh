# Sourced by the Makefile, scripts/setup.sh and .ci/run: where libtorch comes from.
# TORCH_VENV: a Python venv holding torch==2.11.0 (outside the checkout so a reused
# machine skips the 2.6 GB download).
export TORCH_VENV="${TORCH_VENV:-/opt/torch-2.11.0-venv}"
export VIRTUAL_ENV="$TORCH_VENV"
export PATH="$TORCH_VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
# libtorch's OpenMP threads sleep instead of spinning while they wait (see README, "Performance").
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
