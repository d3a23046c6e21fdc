#!/usr/bin/env perl
# queue.pl: run a job, or an array of jobs, on a Sun/Son of/Univa Grid Engine cluster through qsub
# (Kaldi's queue.pl interface; same command line as run.pl).
#
#   queue.pl [--mem 4G] [--num-threads N] [--gpu N] [--max-jobs-run N] [--time T] [--config FILE]
#            [-l resource=value ...] [JOB=1:N] LOGFILE command args...
#
# The generic options are mapped to qsub options through a Kaldi-format config: --config FILE,
# else conf/queue.conf in the current (recipe) folder, else the built-in default, which equals the
# shipped conf/queue.conf:
#   command qsub -v PATH -cwd -S /bin/bash -j y -l arch=*64*
#   option mem=* -l mem_free=$0,ram_free=$0      (--mem 4G)
#   option num_threads=* -pe smp $0              (--num-threads 4)
#   option max_jobs_run=* -tc $0                 (--max-jobs-run 10)
#   option time=* -l h_rt=$0                     (--time 4:00:00)
#   default gpu=0 / option gpu=0 / option gpu=* -l gpu=$0 -q '*.q'
# Other single-dash options (-l ..., -q ..., -pe smp 4, -V) are passed to qsub unchanged.
# A job script is written to <logdir>/q/<name>.sh and submitted (arrays with -t 1:N, the job id
# from SGE_TASK_ID); qsub's own output goes to <logdir>/q/<name>.log. queue.pl then waits for the
# per-task exit-status files the script writes (no -sync), checking with `qstat -j` that the job
# still exists. Environment knobs (seconds): QNET_QUEUE_POLL_MAX (longest poll sleep, 10),
# QNET_QUEUE_CHECK_INTERVAL (qstat check period, 120), QNET_QUEUE_GRACE (how long a job may be
# gone from the queue without an exit status before its tasks count as failed, 60).
# Logs and exit status are as with run.pl. Ctrl-C cancels the job (qdel).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use QnetJobs;

$QnetJobs::PROG = 'queue.pl';
QnetJobs::run_queue('sge', QnetJobs::parse_command_line(@ARGV));
