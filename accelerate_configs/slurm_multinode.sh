#!/bin/bash
# Many nodes with slurm: one `accelerate launch` per node, each told the node count, its rank and where rank 0 is.
#   sbatch --nodes 4 accelerate_configs/slurm_multinode.sh recipes/grpo_gsm8k.yaml [--key value ...]
#SBATCH --job-name=thinktrain
#SBATCH --ntasks-per-node=1          # one launcher per node; it starts one process per GPU
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=96
#SBATCH --exclusive
#SBATCH --output=logs/%x-%j.out
set -euo pipefail
CONFIG=${CONFIG:-accelerate_configs/zero3.yaml}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MAIN_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
srun bash -c "accelerate launch --config_file $CONFIG \
  --num_machines $SLURM_NNODES --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
  --machine_rank \$SLURM_PROCID --main_process_ip $MAIN_IP --main_process_port 29500 \
  --rdzv_backend c10d \
  src/train.py $*"
