#!/usr/bin/env bash
# The two-GPU measurements (docs/performance.md, docs/scaling.md) on a machine with 2 GPUs and no network.
#
# Brings the missing packages from wheels carried in .gpu-wheels, then runs one part. Results and logs go to
# $PERSIST (kept while the machine stays warm, so a cut part is continued by the next call) and are copied
# to $OUT. Every part stops its jobs at DEADLINE seconds (default 540) so that what finished comes back.
#
#   bash bench/two_gpu.sh parity     # world-small: plain on 1 GPU vs ZeRO-3 on 2 GPUs, with the split check;
#                                    # meanwhile, on GPU 1, PGAA's overhead at SmolLM2-135M's shape
#   bash bench/two_gpu.sh scaling    # step time and completions/s: 1 and 2 GPUs, DDP and ZeRO-3
#   bash bench/two_gpu.sh large      # Qwen3-8B shape: full fine-tuning under ZeRO-3 on 2 GPUs, LoRA under
#                                    # DDP, and PGAA's overhead on the LoRA step (1 GPU)
set -uo pipefail
: "${1:?parts: parity, parity-zero3, scaling, large, overhead}"
persist=${PERSIST:-$HOME/persist}
deadline=$((SECONDS + ${DEADLINE:-540}))
mkdir -p "$persist"
python3 -m pip install -q --no-index --find-links .gpu-wheels trl datasets deepspeed gguf
python3 -m pip install -q --no-deps --no-build-isolation -e .
export EDIT_GRPO_CACHE="$persist/cache" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 # NVLink multicast off
left() { echo $((deadline - SECONDS)); }
# run NAME TIMEOUT COMMAND...: one job, its log in $persist/NAME.log, skipped once it has succeeded
run() {
    local name=$1 limit=$2
    shift 2
    if [ -f "$persist/$name.ok" ]; then echo "== $name: done already"; return 0; fi
    if [ "$(left)" -lt 30 ]; then echo "== $name: no time left"; return 1; fi
    [ "$limit" -gt "$(left)" ] && limit=$(left)
    echo "== $name (at most ${limit} s)"
    local started=$SECONDS
    if timeout "$limit" "$@" >"$persist/$name.log" 2>&1; then
        touch "$persist/$name.ok"
        echo "== $name: ok in $((SECONDS - started)) s"
    else
        echo "== $name: FAILED or cut (exit $?) after $((SECONDS - started)) s"
        tail -n 25 "$persist/$name.log"
    fi
}
Z3=(accelerate launch --config_file accelerate_configs/zero3.yaml --num_processes)
DDP=(accelerate launch --config_file accelerate_configs/ddp.yaml --num_processes)
PARITY=(python3 bench/zero3_parity.py --recipe recipes/world-small/memit.yaml --processes 2 --batch 30
    --split-check 4 --seeds 0 1 --zero3-seeds 0 --root "$persist/parity" --out "$persist/parity.json")

for part in "$@"; do
case $part in
parity)
    CUDA_VISIBLE_DEVICES=1 run overhead_smollm2 420 python3 bench/pgaa_overhead.py --size smollm2-135m \
        --steps 6 --warmup 2 --rounds 2 --batch 48 --num-generations 4 --completion-length 256 --cases 64 \
        --profile --out "$persist/overhead_smollm2.json" &
    CUDA_VISIBLE_DEVICES=0 run parity_plain 480 "${PARITY[@]}" --modes plain
    wait
    ;;
parity-zero3)
    run parity_zero3 480 "${PARITY[@]}" --modes plain zero3
    ;;
scaling)
    for size in world-small smollm2-135m; do
        if [ "$size" = world-small ]; then
            shape=(--batch 32 --steps-per-generation 2 --num-generations 4 --completion-length 4 --steps 12 --warmup 2)
        else
            shape=(--batch 48 --num-generations 4 --completion-length 256 --steps 4 --warmup 1)
        fi
        common=(bench/step_time.py --mode full --size "$size" "${shape[@]}")
        CUDA_VISIBLE_DEVICES=0 run "step_${size}_1gpu_ddp" 150 python3 "${common[@]}" --out "$persist/step_${size}_1gpu_ddp.json"
        CUDA_VISIBLE_DEVICES=0 run "step_${size}_1gpu_zero3" 150 "${Z3[@]}" 1 "${common[@]}" --out "$persist/step_${size}_1gpu_zero3.json"
        run "step_${size}_2gpu_ddp" 150 "${DDP[@]}" 2 "${common[@]}" --out "$persist/step_${size}_2gpu_ddp.json"
        run "step_${size}_2gpu_zero3" 150 "${Z3[@]}" 2 "${common[@]}" --out "$persist/step_${size}_2gpu_zero3.json"
    done
    ;;
large)
    # The qwen3-8b recipe's batch shape: 8 completions per process per step, 6 steps per generation batch,
    # G=8, up to 256 tokens, gradient checkpointing; one generation batch timed after one of warm-up.
    shape=(--size qwen3-8b --batch 8 --steps-per-generation 6 --num-generations 8 --generalization 4
        --completion-length 256 --gradient-checkpointing --steps 12 --warmup 6)
    run qwen3_8b_full_zero3_2gpu 300 "${Z3[@]}" 2 bench/step_time.py --mode full "${shape[@]}" \
        --out "$persist/qwen3_8b_full_zero3_2gpu.json"
    run qwen3_8b_lora_ddp_2gpu 200 "${DDP[@]}" 2 bench/step_time.py --mode lora "${shape[@]}" \
        --out "$persist/qwen3_8b_lora_ddp_2gpu.json"
    ;;
overhead)
    CUDA_VISIBLE_DEVICES=1 run overhead_smollm2 420 python3 bench/pgaa_overhead.py --size smollm2-135m \
        --steps 4 --warmup 1 --rounds 1 --batch 48 --num-generations 4 --completion-length 256 --cases 64 \
        --profile --out "$persist/overhead_smollm2.json" &
    CUDA_VISIBLE_DEVICES=0 run overhead_qwen3_8b_lora 300 python3 bench/pgaa_overhead.py --size qwen3-8b --lora \
        --gradient-checkpointing --steps 12 --warmup 6 --rounds 1 --batch 8 --steps-per-generation 6 \
        --num-generations 8 --generalization 4 --completion-length 256 --cases 64 --profile --out "$persist/overhead_qwen3_8b_lora.json"
    wait
    ;;
*)
    echo "unknown part $part" >&2
    exit 2
    ;;
esac
done
nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv
if [ -n "${OUT:-}" ]; then
    cp "$persist"/*.json "$OUT/" 2>/dev/null
    tar czf "$OUT/logs.tgz" -C "$persist" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' \
        --exclude='cache' --exclude='agt_dataset' --exclude='checkpoint-*' --exclude='*.arrow' . 2>/dev/null
    ls -la "$OUT"
fi
