#!/usr/bin/env perl
# slurm.pl: run a job, or an array of jobs, on a SLURM cluster through sbatch (Kaldi's slurm.pl
# interface; same command line as run.pl).
#
#   slurm.pl [--mem 4G] [--num-threads N] [--gpu N] [--max-jobs-run N] [--time T] [--config FILE]
#            [-p partition ...] [JOB=1:N] LOGFILE command args...
#
# The generic options are mapped to sbatch options through a Kaldi-format config: --config FILE,
# else conf/slurm.conf in the current (recipe) folder, else the built-in default, which equals the
# shipped conf/slurm.conf:
#   command sbatch --export=PATH --ntasks-per-node=1
#   option time=* --time $0                      (--time 4:00:00)
#   option mem=* --mem-per-cpu $0                (--mem 4G)
#   option num_threads=* --cpus-per-task $0 --ntasks-per-node=1
#   default gpu=0 / option gpu=0 -p shared / option gpu=* -p gpu --gres=gpu:$0 --time 4:0:0
# --max-jobs-run M becomes --array=1-N%M unless the config maps max_jobs_run itself.
# Other single-dash options (-p ..., -A ...) are passed to sbatch unchanged.
# A job script is written to <logdir>/q/<name>.sh and submitted (arrays with --array=1-N, the job
# id from SLURM_ARRAY_TASK_ID); sbatch's own output goes to <logdir>/q/<name>.log. slurm.pl then
# waits for the per-task exit-status files the script writes, checking with `squeue -j` that the
# job still exists (knobs QNET_QUEUE_POLL_MAX, QNET_QUEUE_CHECK_INTERVAL, QNET_QUEUE_GRACE as in
# queue.pl). Logs and exit status are as with run.pl. Ctrl-C cancels the job (scancel).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use QnetJobs;

$QnetJobs::PROG = 'slurm.pl';
QnetJobs::run_queue('slurm', QnetJobs::parse_command_line(@ARGV));
