#!/usr/bin/env bash
# The knowledge-world benchmark (bench/knowledge_world.py) on a GPU machine with no network.
#
#   MODEL=world-small: the small world, pretrained on the machine the first time (docs/results.md);
#   MODEL=smollm2-135m: SmolLM2-135M-Instruct on real facts (docs/results-smollm2.md). Its GGUF file is
#     joined from two parts (the first left in $PERSIST by an earlier command, the second carried in
#     .smol-b) and converted once with `edit-grpo fetch-model`.
#
# Brings the missing packages from wheels carried in .gpu-wheels. Results append to $PERSIST/$RUN.jsonl (RUN
# defaults to the model's name; one name per benchmark, its runs under $PERSIST/bench-$RUN), so a run cut by
# the time limit is continued by the next one (finished conditions are skipped, stages and training
# checkpoints resume); a copy of the results and the logs lands in $OUT.
#
#   MODEL=world-small BENCH_SECONDS=540 bash bench/gpu_bench.sh --editors rome memit --seeds 0 1 2 \
#       --train-seeds 0 1 2 --workers 24
set -euo pipefail
model=${MODEL:?MODEL=world-small or MODEL=smollm2-135m}
persist=${PERSIST:-$HOME/persist}
run=${RUN:-$model}
mkdir -p "$persist"
export EDIT_GRPO_CACHE="$persist/cache" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
case $model in
world-small) data=(--size small) ;;
smollm2-135m) data=(--recipes smollm2-135m --source 'facts:real:{seed}') ;;
*) echo "unknown MODEL=$model: world-small or smollm2-135m" >&2; exit 2 ;;
esac
# Two benchmarks may start at once (one per editor): the first installs and prepares, the other waits.
(
    flock 9
    python3 -m pip install -q --no-index --find-links .gpu-wheels trl datasets deepspeed gguf
    python3 -m pip install -q --no-deps --no-build-isolation -e .
    if [ "$model" = smollm2-135m ]; then
        if [ ! -f "$persist/smollm2.gguf" ]; then
            cat "$persist/part.aa" .smol-b/part.ab > "$persist/smollm2.gguf"
        fi
        python3 -m edit_grpo_trl.cli fetch-model smollm2-135m --gguf "$persist/smollm2.gguf"
    else  # pretrained once, here, so that two benchmarks starting together do not both pretrain it
        python3 -c "from edit_grpo_trl.world import ensure_world_model; print(ensure_world_model('small'))"
    fi
) 9>"$persist/setup.lock"
status=0
timeout "${BENCH_SECONDS:-540}" python3 bench/knowledge_world.py run "${data[@]}" \
    --root "$persist/bench-$run" --results "$persist/$run.jsonl" "$@" || status=$?
if [ -n "${OUT:-}" ]; then
    cp "$persist/$run.jsonl" "$OUT/" 2>/dev/null || true
    tar czf "$OUT/$run-logs.tgz" -C "$persist/bench-$run" --exclude='*.safetensors' --exclude='*.pt' \
        --exclude='*.bin' --exclude='agt_dataset' --exclude='checkpoint-*' . 2>/dev/null || true
fi
echo "bench exit status: $status"
