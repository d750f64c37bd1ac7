#!/bin/bash
# Many nodes with slurm: one `accelerate launch` per node, each told the node count, its rank and where rank 0 is.
#   sbatch --nodes 4 accelerate_configs/slurm_multinode.sh recipes/grpo_gsm8k.yaml [--key value ...]
# Preemption and the time limit: 180 s before the end slurm sends USR1 to this script, which passes SIGTERM on;
# every rank finishes its step, saves a checkpoint there and exits 75, and the job is requeued; the requeued job
# runs this same script, which resumes from that checkpoint (docs/scaling.md#preemption-requeue-torn-checkpoints-full-disks).
#SBATCH --job-name=thinktrain
#SBATCH --ntasks-per-node=1          # one launcher per node; it starts one process per GPU
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=96
#SBATCH --exclusive
#SBATCH --output=logs/%x-%j.out
#SBATCH --signal=B:USR1@180          # USR1 to this batch script (B:) 180 s before the time limit
#SBATCH --requeue
#SBATCH --open-mode=append           # a requeued run appends to its log
set -uo pipefail
CONFIG=${CONFIG:-accelerate_configs/zero3.yaml}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MAIN_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
srun bash -c "exec accelerate launch --config_file $CONFIG \
  --num_machines $SLURM_NNODES --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
  --machine_rank \$SLURM_PROCID --main_process_ip $MAIN_IP --main_process_port 29500 \
  --rdzv_backend c10d \
  src/train.py $*" &
RUN=$!
PREEMPTED=0
# srun passes SIGTERM to every task: each launcher hands it to its ranks and gives them 30 s (torch elastic's
# shutdown timeout) to finish the step and save before it kills them (a save cut there is a torn checkpoint: the
# rerun resumes from the one before)
trap 'PREEMPTED=1; kill -TERM "$RUN"' USR1 TERM
CODE=0
while kill -0 "$RUN" 2>/dev/null; do wait "$RUN"; CODE=$?; done  # wait returns early when a signal is trapped
if [ "$CODE" -ne 0 ] && { [ "$PREEMPTED" = 1 ] || [ "$CODE" = 75 ]; }; then
  echo "thinktrain: preempted (exit $CODE): requeueing job $SLURM_JOB_ID; it resumes from its checkpoint"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$CODE"
