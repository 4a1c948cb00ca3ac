#!/usr/bin/env bash
# The notebook's "When one node is not enough", run for real on one host with two GPUs: a head
# node and a worker node that joins it, one GPU each, the 70B's shape (fp8, random weights) split
# into two pipeline stages, one per node. Then the same shape at tensor parallel 2 on one node, for
# comparison. Writes docs/results/multinode-<gpu>x2.json and .png.
# What differs from two hosts, all for sharing one: each node gets its GPU by CUDA_VISIBLE_DEVICES,
# the worker its own --temp-dir, agent and node-manager ports, and Serve one proxy (HeadOnly), as
# both nodes would bind port 8000; NCCL between the stages runs inside the host, not over a network.
set -euo pipefail
cd "$(dirname "$0")/.."

work=${WORK_DIR:-/tmp/multinode}
mkdir -p "$work"
export RAY_AUTH_MODE=token LLM_PROFILE=rehearsal-fp8
trap 'python -m tutorial.teardown' EXIT

# The two-node cluster. On two hosts: the same commands, the second with the head's address, after
# copying ~/.ray/auth_token from the head.
ray get-auth-token --generate > /dev/null
CUDA_VISIBLE_DEVICES=0 setsid --wait ray start --head --num-cpus 8 --num-gpus 1 --metrics-export-port 8080 \
  --disable-usage-stats
python -m tutorial.teardown --remember
CUDA_VISIBLE_DEVICES=1 setsid --wait ray start --address 127.0.0.1:6379 --num-cpus 8 --num-gpus 1 \
  --temp-dir /tmp/ray-worker-node --dashboard-agent-listen-port 52366 --node-manager-port 6380
python -m tutorial.teardown --remember 6380
ray status

# Two pipeline stages of one GPU each; preflight counts the GPUs of both nodes.
export REHEARSAL_PIPELINE_PARALLEL_SIZE=2 REHEARSAL_TENSOR_PARALLEL_SIZE=1
python -m tutorial.preflight
serve start --proxy-location HeadOnly
timeout 900 serve run serve_llama_3_1_70b:app --non-blocking || { python -m tutorial.ready; exit 1; }
python -m tutorial.placement
curl -sS --fail-with-body --max-time 120 http://127.0.0.1:8000/v1/chat/completions \
  -H "Content-Type: application/json" \
  -d '{"model": "my-llama-3.1-70b", "max_tokens": 16, "messages": [{"role": "user", "content": "What is 2 + 2?"}]}'
echo
python -m ci.multinode measure "$work/pp2.json"
python -m ci.multinode lose-node "$work/pp2.json" || echo "multinode: the node-loss step failed"
python -m tutorial.teardown

# The same shape on one node: tensor parallel 2, the deployment benchmarks/bench.py starts itself; or
# TP2_RESULTS, an earlier run of that command on the same kind of host.
tp2=${TP2_RESULTS:-$work/bench-tp2.json}
if [ -z "${TP2_RESULTS:-}" ]; then
  unset REHEARSAL_PIPELINE_PARALLEL_SIZE REHEARSAL_TENSOR_PARALLEL_SIZE
  python -m benchmarks.bench --models 70b-fp8 --servers ray-serve --ray-configs tutorial --concurrency 1 16 64 \
    --min-prompts 8 --out "$tp2"
fi
python -m ci.multinode record "$work/pp2.json" "$tp2"
