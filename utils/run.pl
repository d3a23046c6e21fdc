#!/usr/bin/env perl
# run.pl: run a job, or an array of jobs, on this machine, in parallel (Kaldi's run.pl interface).
#
#   run.pl [--max-jobs-run N] [--pick all|failed|incomplete] [--mem 4G] [--num-threads N] [--gpu N]
#          [--time T] [--config FILE] [JOB=1:N] LOGFILE command args...
#
# e.g.  run.pl JOB=1:4 exp/log/feats.JOB.log python -m qnet.bin.compute_features --part JOB
#       run.pl exp/log/count.log "cut -d' ' -f2- data/text | wc -w"
#
# JOB (any identifier) is replaced by the job id in the log name and the command. Each job runs
# with `bash -c`, stdout and stderr appended to its log, which starts with '# <command>' and
# '# Started at ...' and ends with '# Accounting: time=S threads=N' and
# '# Ended (code N) at ..., elapsed time S seconds'.
# At most --max-jobs-run (or -tc) jobs run at once; the default is the number of CPUs, or the
# number of GPUs (nvidia-smi -L) with --gpu N > 0. --mem, --num-threads, --gpu, --time and
# --config are accepted and otherwise ignored, so recipes can switch between run.pl, queue.pl and
# slurm.pl. --pick failed reruns only jobs whose log records a non-zero exit code; --pick
# incomplete reruns every job whose log does not record exit code 0.
# Exit status 1 when any job failed, with the failed job ids and their logs on stderr.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use QnetJobs;

$QnetJobs::PROG = 'run.pl';
QnetJobs::run_local(QnetJobs::parse_command_line(@ARGV));
