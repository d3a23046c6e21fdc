# cmd.sh: how recipe stages run their jobs. Recipes symlink it (egs/<name>/cmd.sh -> ../../conf/cmd.sh)
# and source it in run.sh; stages call e.g. `$train_cmd JOB=1:$nj exp/log/x.JOB.log prog ... JOB`.
#
# Choose one block:
# - run.pl (default): runs the jobs on this machine, at most --max-jobs-run at once (default: the
#   number of CPUs; with --gpu, the number of GPUs). --mem/--gpu/--num-threads/--time are ignored.
# - slurm.pl: submits to SLURM with sbatch; options mapped through conf/slurm.conf (edit partitions).
# - queue.pl: submits to Sun/Univa Grid Engine with qsub; options mapped through conf/queue.conf.
# All three take the same options, so the recipes do not change. To use a private copy instead of
# the shared one, replace the symlink by a copy of this file.

export train_cmd="run.pl"
export decode_cmd="run.pl --mem 4G"
export cuda_cmd="run.pl --gpu 1"

# SLURM:
# export train_cmd="slurm.pl --mem 4G"
# export decode_cmd="slurm.pl --mem 4G"
# export cuda_cmd="slurm.pl --mem 16G --gpu 1 --num-threads 4 --time 48:00:00"

# Grid Engine (SGE/UGE):
# export train_cmd="queue.pl --mem 4G"
# export decode_cmd="queue.pl --mem 4G"
# export cuda_cmd="queue.pl --mem 16G --gpu 1 --num-threads 4"
