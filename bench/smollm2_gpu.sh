#!/usr/bin/env bash
# The SmolLM2-135M benchmark on a GPU machine with no network (docs/results-smollm2.md): bench/gpu_bench.sh
# with MODEL=smollm2-135m (RUN defaults to smollm2, the name its earlier results were written under).
#
#   BENCH_SECONDS=540 bash bench/smollm2_gpu.sh --editors rome memit --seeds 0 1 2 --max-steps 200
MODEL=smollm2-135m RUN=${RUN:-smollm2} exec bash "$(dirname "$0")/gpu_bench.sh" "$@"
