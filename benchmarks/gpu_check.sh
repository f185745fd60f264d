#!/usr/bin/env bash
# The GPU check: the kernels compiled for the GPU (Pallas through Triton, not interpreted) against
# their golden models, the methods' unit tests, and the kernel benchmark at batch 1, 16 and 256.
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# Run from the repository root on a machine whose python3 has JAX with CUDA (and flax, optax,
# chex, orbax, hypothesis, pytest). Packages it lacks (pydantic for cooptim's configs) can come as
# wheels in .whl/, installed without the network. Everything it prints goes to OUT_DIR.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$out"
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# the GPU as JAX's platform, full XLA optimisation (tests/conftest.py sets CPU and level 0 only
# where these are unset), one process on the GPU without preallocating its memory
export JAX_PLATFORMS=cuda XLA_FLAGS= XLA_PYTHON_CLIENT_PREALLOCATE=false
export JAX_COMPILATION_CACHE_DIR=/tmp/cooptim-gpu-cache

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -c "import jax; print(jax.__version__, jax.devices())"; } > "$out/device.txt" 2>&1
python3 -m pytest -q -p no:cacheprovider -n 0 -rA --timeout=600 \
  tests/unit/test_kernels_nm.py tests/unit/test_kernels_skip.py tests/unit/test_nm.py \
  tests/unit/test_fixed_point.py tests/unit/test_methods_unit.py > "$out/tests.txt" 2>&1
echo "tests exit $?" >> "$out/tests.txt"
for batch in 1 16 256; do
  timeout 300 python3 benchmarks/kernels.py --batch "$batch" --quick > "$out/kernels_batch$batch.txt" 2>&1
  echo "exit $?" >> "$out/kernels_batch$batch.txt"
done
tail -n 3 "$out"/*.txt
