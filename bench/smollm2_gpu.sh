#!/usr/bin/env bash
# The SmolLM2-135M benchmark on a GPU machine with no network (docs/results-smollm2.md).
#
# Brings the missing packages from wheels carried in .gpu-wheels, joins the model's GGUF file from two
# parts (the first left in $PERSIST by an earlier command, the second carried in .smol-b), converts it
# once with `edit-grpo fetch-model`, then runs bench/knowledge_world.py on the smollm2-135m recipes.
# Results append to $PERSIST/$RUN.jsonl (RUN defaults to smollm2; one name per benchmark, its runs under
# $PERSIST/bench-$RUN), so a run cut by the time limit is continued by the next one (finished conditions are
# skipped, stages and training checkpoints resume); a copy lands in $OUT.
#
#   BENCH_SECONDS=540 bash bench/smollm2_gpu.sh --editors rome memit --seeds 0 1 2 --max-steps 200
set -euo pipefail
persist=${PERSIST:-$HOME/persist}
run=${RUN:-smollm2}
mkdir -p "$persist"
export EDIT_GRPO_CACHE="$persist/cache" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Two benchmarks may start at once (one per editor): the first installs and converts, the other waits.
(
    flock 9
    python3 -m pip install -q --no-index --find-links .gpu-wheels trl datasets deepspeed gguf
    python3 -m pip install -q --no-deps --no-build-isolation -e .
    if [ ! -f "$persist/smollm2.gguf" ]; then
        cat "$persist/part.aa" .smol-b/part.ab > "$persist/smollm2.gguf"
    fi
    python3 -m edit_grpo_trl.cli fetch-model smollm2-135m --gguf "$persist/smollm2.gguf"
) 9>"$persist/setup.lock"
status=0
timeout "${BENCH_SECONDS:-540}" python3 bench/knowledge_world.py run --recipes smollm2-135m \
    --source 'facts:real:{seed}' --root "$persist/bench-$run" --results "$persist/$run.jsonl" "$@" || status=$?
if [ -n "${OUT:-}" ]; then
    cp "$persist/$run.jsonl" "$OUT/" 2>/dev/null || true
    tar czf "$OUT/$run-logs.tgz" -C "$persist/bench-$run" --exclude='*.safetensors' --exclude='*.pt' \
        --exclude='*.bin' --exclude='agt_dataset' --exclude='checkpoint-*' . 2>/dev/null || true
fi
echo "bench exit status: $status"
