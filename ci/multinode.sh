#!/usr/bin/env bash
# The notebook's "When one node is not enough", run for real on one host: two Ray nodes, the 70B's
# shape in two pipeline stages, one per node, against the same shape on one node
# (python -m lab run multinode --help). GPUS_PER_NODE=1 (default) needs two GPUs, 2 needs four;
# ONE_NODE reuses an earlier one-node benchmark of the same shape on the same kind of host.
# Writes docs/results/multinode-<gpu>x<n>.json and .png.
set -euo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python -m tutorial.small_model
python -m lab run multinode --record --gpus-per-node "${GPUS_PER_NODE:-1}" ${ONE_NODE:+--one-node "$ONE_NODE"}
