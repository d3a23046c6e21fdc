package QnetJobs;

# Shared code of utils/run.pl, utils/queue.pl and utils/slurm.pl (qnet's own implementation of
# Kaldi's job-dispatch interface):
#
#   <prog> [options] [VAR=a:b | VAR=n] LOGFILE command args...
#
# One place for the command-line and JOB parsing, the shell quoting, the log header/footer format,
# the failure report, the queue config files, and the queue submit-and-poll loop.
# Only core Perl modules are used.

use strict;
use warnings;

use Cwd qw(getcwd abs_path);
use File::Basename qw(basename dirname);
use File::Path qw(make_path);
use File::Spec;
use POSIX qw(strftime);
use Time::HiRes qw(time sleep);

our $PROG = basename($0);    # prefix of every message; set by each script

# ---------------------------------------------------------------------------------------------
# Messages

sub fail {
  my ($msg) = @_;
  print STDERR "$PROG: $msg\n";
  exit 1;
}

sub usage_text {
  return <<"EOF";
Usage: $PROG [options] [JOB=1:N] LOGFILE command [args...]
Runs 'command args...' (bash -c semantics: pipes and redirections work), writing its stdout and
stderr to LOGFILE. With JOB=1:N (any identifier instead of JOB) it runs N jobs; the identifier is
replaced by the job id in LOGFILE and in the command. A single argument is taken as a whole shell
command line; with several arguments, words with spaces or quotes are quoted.
Options (--name value, never --name=value):
  --max-jobs-run N | -tc N   at most N jobs at once
  --num-threads N            threads per job
  --mem SIZE                 memory per job (e.g. 4G)
  --gpu N                    GPUs per job
  --time T                   wall-clock limit per job
  --config FILE              queue config (queue.pl/slurm.pl; default conf/queue.conf or conf/slurm.conf)
  --pick all|failed|incomplete   (run.pl) rerun only failed / failed-or-unfinished jobs
The exit status is 1 when any job failed; the failed job ids and their logs are printed.
EOF
}

# ---------------------------------------------------------------------------------------------
# Command-line parsing

# Parse the command line of run.pl / queue.pl / slurm.pl. Returns a hash ref:
#   opts     => {name => value} for generic --name value options (dashes turned into underscores)
#   order    => [names in the order given]
#   raw      => [scheduler-native options, e.g. -l h=foo, passed through by queue.pl/slurm.pl]
#   threads  => threads per job for the accounting line
#   var, start, end, array => the job range (var undef when no VAR=... was given)
#   log      => the log file name (may contain var)
#   cmd      => the command as one shell command line (may contain var)
sub parse_command_line {
  my @argv = @_;
  if (!@argv) {
    print STDERR usage_text();
    exit 1;
  }
  my (%opts, @order, @raw, $pe_threads);
  my ($var, $start, $end, $array);
  while (@argv) {
    my $arg = $argv[0];
    # The job range may come before, after or between the options (Kaldi allows all three).
    if ($arg =~ /^([A-Za-z_]\w*)=(\d+)(?::(\d+))?$/) {
      fail("two job ranges given: '$var=...' and '$arg'") if defined $var;
      ($var, $start, $end, $array) = ($1, $2 + 0, defined $3 ? $3 + 0 : $2 + 0, defined $3 ? 1 : 0);
      fail("bad job range '$arg': the end is before the start") if $end < $start;
      shift @argv;
      next;
    }
    last unless $arg =~ /^-/;
    shift @argv;
    if ($arg =~ /^--[A-Za-z][\w-]*=/) {
      fail("options must be given as '--name value', not '$arg'");
    } elsif ($arg =~ /^--([A-Za-z][\w-]*)$/) {
      fail("option $arg needs a value") unless @argv;
      (my $name = $1) =~ tr/-/_/;
      push @order, $name unless exists $opts{$name};
      $opts{$name} = shift @argv;
    } elsif ($arg eq '-V') {    # SGE: export the whole environment (takes no value)
      push @raw, $arg;
    } elsif ($arg eq '-tc') {    # SGE spelling of --max-jobs-run
      fail("option $arg needs a value") unless @argv;
      push @order, 'max_jobs_run' unless exists $opts{max_jobs_run};
      $opts{max_jobs_run} = shift @argv;
    } elsif ($arg eq '-pe') {    # SGE parallel environment: -pe smp 4 (two values)
      fail("option $arg needs two values (e.g. -pe smp 4)") unless @argv >= 2;
      push @raw, $arg, shift @argv;
      $pe_threads = shift @argv;
      push @raw, $pe_threads;
    } elsif ($arg =~ /^-[A-Za-z]/) {    # any other scheduler-native option with one value
      fail("option $arg needs a value") unless @argv;
      push @raw, $arg, shift @argv;
    } else {
      fail("unexpected argument '$arg' (expected an option, JOB=1:N or the log file)");
    }
  }
  fail("no log file and command given\n" . usage_text()) unless @argv;
  my $log = shift @argv;
  fail("no command given after the log file '$log'") unless @argv;
  if ($array && $end > $start && index($log, $var) < 0) {
    fail("you are running a job array ($var=$start:$end) but the log file name '$log' does not "
        . "contain $var, so all jobs would write the same log");
  }
  for my $name (qw(max_jobs_run num_threads)) {
    fail("--" . dash($name) . " must be a positive integer, got '$opts{$name}'")
      if exists $opts{$name} && $opts{$name} !~ /^[1-9]\d*$/;
  }
  fail("--gpu must be a non-negative integer, got '$opts{gpu}'")
    if exists $opts{gpu} && $opts{gpu} !~ /^\d+$/;
  my $threads = $opts{num_threads} // $pe_threads // 1;
  return {
    opts => \%opts, order => \@order, raw => \@raw, threads => $threads,
    var => $var, start => $start // 1, end => $end // 1, array => $array // 0,
    log => $log, cmd => shell_join(@argv),
  };
}

sub dash {
  my ($name) = @_;
  return $name =~ tr/_/-/r;
}

# The job ids to run, in order.
sub job_ids {
  my ($job) = @_;
  return ($job->{start} .. $job->{end});
}

# $text with every occurrence of the job variable replaced by $id (Kaldi: plain substring replace).
sub subst {
  my ($job, $text, $id) = @_;
  return $text unless defined $job->{var};
  return $text =~ s/\Q$job->{var}\E/$id/gr;
}

# The log name with the job variable shown as '*' (for messages about arrays).
sub log_pattern {
  my ($job) = @_;
  return subst($job, $job->{log}, '*');
}

# ---------------------------------------------------------------------------------------------
# Shell quoting

# Single-quote a string for bash.
sub sq {
  my ($s) = @_;
  return "'" . ($s =~ s/'/'\\''/gr) . "'";
}

# Kaldi's convention: one argument is a whole shell command line; several arguments are joined, where
# a word without spaces or quotes stays as it is (so '|', '>', '2>&1', '$x' keep their shell meaning)
# and any other word is quoted so that it reaches the program as one argument.
sub shell_join {
  my @args = @_;
  return $args[0] if @args == 1;
  return join ' ', map { ($_ ne '' && !/[\s'"\\]/) ? $_ : sq($_) } @args;
}

# ---------------------------------------------------------------------------------------------
# Logs

sub date_string {
  return strftime('%a %b %e %H:%M:%S %Z %Y', localtime);
}

sub log_header {
  my ($cmd) = @_;
  my $text = join '', map { "# $_\n" } split /\n/, $cmd, -1;
  return $text . "# Started at " . date_string() . "\n#\n";
}

sub log_footer {
  my ($code, $elapsed, $threads) = @_;
  return "# Accounting: time=$elapsed threads=$threads\n"
    . "# Ended (code $code) at " . date_string() . ", elapsed time $elapsed seconds\n";
}

# The exit code recorded by the last '# Ended (code N)' line of a log, or undef.
sub logged_exit_code {
  my ($log) = @_;
  open(my $fh, '<', $log) or return undef;
  my $code;
  while (my $line = <$fh>) {
    $code = $1 if $line =~ /^# Ended \(code (\d+)\)/;
  }
  close $fh;
  return $code;
}

sub make_log_dirs {
  my ($job) = @_;
  my %seen;
  for my $id (job_ids($job)) {
    my $dir = dirname(subst($job, $job->{log}, $id));
    next if $seen{$dir}++ || -d $dir;
    eval { make_path($dir); 1 } or fail("cannot create the log folder '$dir': $@");
  }
}

# Print the failure summary and exit 1 when any job failed; otherwise exit 0.
# %$codes: job id => exit code (undef: no exit status, e.g. killed by the queue).
sub report_and_exit {
  my ($job, $codes) = @_;
  my @ids = job_ids($job);
  my @failed = grep { !defined $codes->{$_} || $codes->{$_} != 0 } @ids;
  exit 0 unless @failed;
  if (!$job->{array}) {
    print STDERR "$PROG: job failed, log is in " . subst($job, $job->{log}, $ids[0]) . "\n";
  } else {
    printf STDERR "%s: %d / %d failed, log is in %s\n", $PROG, scalar(@failed), scalar(@ids),
      log_pattern($job);
    my @logs = map { subst($job, $job->{log}, $_) } @failed;
    my $shown = @logs > 10 ? join(' ', @logs[0 .. 9]) . ' ...' : join(' ', @logs);
    print STDERR "$PROG: failed $job->{var} ids: @failed; logs: $shown\n";
  }
  exit 1;
}

sub exit_code_of_status {
  my ($status) = @_;
  return 128 + ($status & 127) if $status & 127;    # killed by a signal, as bash reports it
  return $status >> 8;
}

# ---------------------------------------------------------------------------------------------
# run.pl: local parallel execution

sub num_cpus {
  my $n = `getconf _NPROCESSORS_ONLN 2>/dev/null`;
  return $1 if defined $n && $n =~ /^(\d+)/ && $1 > 0;
  return 1;
}

sub num_gpus {
  my $out = `nvidia-smi -L 2>/dev/null`;
  return 0 if !defined $out || $?;
  return scalar(() = $out =~ /^GPU \d+/mg);
}

sub run_local {
  my ($job) = @_;
  my $opts = $job->{opts};
  my $pick = $opts->{pick} // 'all';
  fail("--pick must be all, failed or incomplete, got '$pick'") unless $pick =~ /^(all|failed|incomplete)$/;
  my $max_jobs = $opts->{max_jobs_run};
  if (!defined $max_jobs) {
    my $gpus = ($opts->{gpu} // 0) > 0 ? num_gpus() : 0;
    $max_jobs = $gpus > 0 ? $gpus : num_cpus();
  }
  make_log_dirs($job);

  my (%codes, @pending);
  for my $id (job_ids($job)) {
    my $logged = $pick eq 'all' ? undef : logged_exit_code(subst($job, $job->{log}, $id));
    my $skip = ($pick eq 'failed' && (!defined $logged || $logged == 0))
      || ($pick eq 'incomplete' && defined $logged && $logged == 0);
    if ($skip) { $codes{$id} = 0 } else { push @pending, $id }
  }

  my %running;    # pid => {id, log, t0}
  my $stop = sub {
    my ($sig) = @_;
    kill 'TERM', map { -$_ } keys %running;    # each job runs in its own process group
    print STDERR "$PROG: caught SIG$sig, terminated " . scalar(keys %running) . " running job(s)\n";
    exit($sig eq 'INT' ? 130 : 143);
  };
  local $SIG{INT} = $stop;
  local $SIG{TERM} = $stop;
  local $SIG{HUP} = $stop;

  while (@pending || %running) {
    while (@pending && keys(%running) < $max_jobs) {
      my $id = shift @pending;
      my $log = subst($job, $job->{log}, $id);
      my $cmd = subst($job, $job->{cmd}, $id);
      open(my $fh, '>', $log) or fail("cannot write the log file '$log': $!");
      print $fh log_header($cmd);
      close $fh;
      my $pid = fork;
      fail("cannot fork: $!") unless defined $pid;
      if ($pid == 0) {
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
        setpgrp(0, 0);
        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>>', $log) or POSIX::_exit(127);
        open(STDERR, '>&', \*STDOUT) or POSIX::_exit(127);
        exec('bash', '-c', $cmd) or print STDERR "$PROG: cannot run bash: $!\n";
        POSIX::_exit(127);
      }
      $running{$pid} = {id => $id, log => $log, t0 => time};
    }
    my $pid = waitpid(-1, 0);
    last if $pid < 0;
    my $done = delete $running{$pid} or next;
    my $code = exit_code_of_status($?);
    my $elapsed = int(time - $done->{t0} + 0.5);
    if (open(my $fh, '>>', $done->{log})) {
      print $fh log_footer($code, $elapsed, $job->{threads});
      close $fh;
    }
    $codes{$done->{id}} = $code;
  }
  report_and_exit($job, \%codes);
}

# ---------------------------------------------------------------------------------------------
# queue.pl / slurm.pl: grid-engine and SLURM submission

# Kaldi's built-in configs (egs/wsj/s5/utils/parallel/{queue,slurm}.pl), plus `option time=*` for
# SGE so that recipes passing --time stay portable. The no-op lines (mem=0, num_threads=1, gpu=0)
# keep the defaults from requesting anything.
our %FLAVORS = (
  sge => {
    prog => 'queue.pl',
    conf => 'conf/queue.conf',
    task_env => 'SGE_TASK_ID',
    array_opt => sub { my ($n, $max) = @_; "-t 1:$n" },
    jobid_re => qr/Your job(?:-array)? (\d+)/,
    alive_cmd => sub { "qstat -j $_[0]" },
    alive => sub { my ($rc, $out) = @_; $rc == 0 },
    cancel_cmd => sub { "qdel $_[0]" },
    default_config => <<'EOF',
command qsub -v PATH -cwd -S /bin/bash -j y -l arch=*64*
option mem=* -l mem_free=$0,ram_free=$0
option mem=0          # do not add anything to the qsub options
option num_threads=* -pe smp $0
option num_threads=1  # do not add anything to the qsub options
option max_jobs_run=* -tc $0
option time=* -l h_rt=$0
default gpu=0
option gpu=0
option gpu=* -l gpu=$0 -q '*.q'
EOF
  },
  slurm => {
    prog => 'slurm.pl',
    conf => 'conf/slurm.conf',
    task_env => 'SLURM_ARRAY_TASK_ID',
    array_opt => sub { my ($n, $max) = @_; "--array=1-$n" . (defined $max ? "%$max" : '') },
    jobid_re => qr/Submitted batch job (\d+)/,
    alive_cmd => sub { "squeue -h -j $_[0]" },
    alive => sub { my ($rc, $out) = @_; $rc == 0 && $out =~ /\S/ },
    cancel_cmd => sub { "scancel $_[0]" },
    default_config => <<'EOF',
command sbatch --export=PATH --ntasks-per-node=1
option time=* --time $0
option mem=* --mem-per-cpu $0
option mem=0          # do not add anything to the sbatch options
option num_threads=* --cpus-per-task $0 --ntasks-per-node=1
option num_threads=1 --cpus-per-task 1 --ntasks-per-node=1
default gpu=0
option gpu=0 -p shared
option gpu=* -p gpu --gres=gpu:$0 --time 4:0:0
# --max-jobs-run is handled by slurm.pl itself (--array=1-N%M) unless an option line maps it.
EOF
  },
);

# Parse a Kaldi queue config: `command ...`, `option name=value opts`, `option name=* opts with $0`,
# `default name=value`; '#' starts a comment.
sub parse_config {
  my ($text, $source) = @_;
  my %config = (command => undef, option => {}, default => {});
  my $lineno = 0;
  for my $line (split /\n/, $text) {
    $lineno++;
    $line =~ s/#.*$//;
    $line =~ s/^\s+|\s+$//g;
    next if $line eq '';
    if ($line =~ /^command\s+(\S.*)$/) {
      $config{command} = $1;
    } elsif ($line =~ /^option\s+(\w+)=(\S+)(?:\s+(.*))?$/) {
      $config{option}{$1}{$2} = $3 // '';
    } elsif ($line =~ /^default\s+(\w+)=(\S+)$/) {
      $config{default}{$1} = $2;
    } else {
      fail("$source line $lineno: cannot parse '$line' (expected 'command ...', "
          . "'option name=value ...', 'option name=* ... \$0' or 'default name=value')");
    }
  }
  fail("$source has no 'command ...' line") unless defined $config{command};
  return \%config;
}

# The scheduler options for the generic options, through the config.
# Defaults come first, then the options in command-line order, so that a later option wins where
# two of them give the same scheduler option (e.g. --time 48:00:00 after --gpu 1 in slurm.conf).
sub map_options {
  my ($config, $source, $values, $order) = @_;
  my @mapped;
  my %given = map { $_ => 1 } @$order;
  my @names = ((grep { !$given{$_} } sort keys %{$config->{default}}), @$order);
  for my $name (@names) {
    next unless exists $values->{$name};
    my $value = $values->{$name};
    my $choices = $config->{option}{$name};
    if ($choices && exists $choices->{$value}) {
      push @mapped, $choices->{$value};
    } elsif ($choices && exists $choices->{'*'}) {
      push @mapped, $choices->{'*'} =~ s/\$0/$value/gr;
    } else {
      fail("option --" . dash($name) . " $value is not described in $source (no 'option $name=$value' "
          . "or 'option $name=*' line)");
    }
  }
  return grep { $_ ne '' } @mapped;
}

# Run a shell command line without globbing (configs hold words like arch=*64*); returns (rc, output).
sub run_shell {
  my ($cmdline) = @_;
  open(my $ph, '-|', 'bash', '-c', "exec 2>&1; set -f; $cmdline") or return (127, "cannot run bash: $!\n");
  local $/;
  my $out = <$ph> // '';
  close $ph;
  return (exit_code_of_status($?), $out);
}

sub job_script {
  my (%a) = @_;
  my ($job, $flavor, $cwd, $done_prefix, $submit) = @a{qw(job flavor cwd done_prefix submit)};
  my $s = "#!/bin/bash\n"
    . "# Job script written by $PROG at " . date_string() . "\n"
    . "# Submitted with: $submit\n"
    . "cd " . sq($cwd) . " || exit 1\n";
  if ($job->{array}) {
    my $env = $flavor->{task_env};
    $s .= "task=\${$env:?$PROG job script: $env is not set}\n"
      . "id=\$((task + " . ($job->{start} - 1) . "))\n"
      . "log_template=" . sq($job->{log}) . "\n"
      . "cmd_template=" . sq($job->{cmd}) . "\n"
      . "log=\${log_template//$job->{var}/\$id}\n"
      . "cmd=\${cmd_template//$job->{var}/\$id}\n";
  } else {
    my $id = $job->{start};
    $s .= "id=$id\n"
      . "log=" . sq(subst($job, $job->{log}, $id)) . "\n"
      . "cmd=" . sq(subst($job, $job->{cmd}, $id)) . "\n";
  }
  $s .= "done_file=" . sq($done_prefix) . ".\$id\n" . <<"EOF";
{
  sed 's/^/# /' <<<"\$cmd"
  echo "# Started at \$(date)"
  echo "# Running on \$(hostname 2>/dev/null || uname -n), job \${JOB_ID:-\${SLURM_JOB_ID:-?}} task \$id"
  echo "#"
} >"\$log"
t0=\$(date +%s)
(
  if [ -f ./path.sh ]; then . ./path.sh || exit 1; fi
  exec bash -c "\$cmd"
) </dev/null >>"\$log" 2>&1
ret=\$?
t1=\$(date +%s)
elapsed=\$((t1 - t0))
echo "# Accounting: time=\$elapsed threads=$job->{threads}" >>"\$log"
echo "# Ended (code \$ret) at \$(date), elapsed time \$elapsed seconds" >>"\$log"
printf '%s\\n' "\$ret" >"\$done_file.tmp" && mv -f "\$done_file.tmp" "\$done_file"
# Exit 0/1 only: grid engine gives codes 99 and 100 special meanings.
[ "\$ret" -eq 0 ]
EOF
  return $s;
}

sub env_seconds {
  my ($name, $default) = @_;
  my $v = $ENV{$name};
  return $default unless defined $v && $v ne '';
  fail("environment variable $name must be a number of seconds, got '$v'") unless $v =~ /^\d+(\.\d*)?$/;
  return $v;
}

sub run_queue {
  my ($flavor_name, $job) = @_;
  my $flavor = $FLAVORS{$flavor_name} or die "unknown flavor $flavor_name";
  my %values = %{$job->{opts}};

  # The config: --config FILE, else conf/queue.conf (conf/slurm.conf) in the current folder, else built in.
  my ($config_text, $source);
  if (defined(my $file = delete $values{config})) {
    ($source = $file);
  } elsif (-f $flavor->{conf}) {
    $source = $flavor->{conf};
  }
  if (defined $source) {
    open(my $fh, '<', $source) or fail("cannot read the config file '$source': $!");
    local $/;
    $config_text = <$fh>;
    close $fh;
  } else {
    $config_text = $flavor->{default_config};
    $source = "the built-in default config of $PROG";
  }
  my $config = parse_config($config_text, $source);
  %values = (%{$config->{default}}, %values);
  my $max_jobs;
  if ($flavor_name eq 'slurm' && !exists $config->{option}{max_jobs_run}) {
    $max_jobs = delete $values{max_jobs_run};
  }
  delete $values{max_jobs_run} unless $job->{array};    # a concurrency limit means nothing for one job
  my @opts = map_options($config, $source, \%values, $job->{order});
  push @opts, map { /^[^\s'"\\]+$/ ? $_ : sq($_) } @{$job->{raw}};

  make_log_dirs($job);
  my $cwd = getcwd();
  # q/ lives beside the logs (of the first job when the job variable is in the folder name).
  my $logdir = dirname(subst($job, $job->{log}, $job->{start}));
  my $qdir = "$logdir/q";
  eval { make_path($qdir); 1 } or fail("cannot create '$qdir': $@");
  my $base = basename($job->{log});
  $base =~ s/\.?\Q$job->{var}\E//g if defined $job->{var};
  $base =~ s/\.log$//;
  $base = 'job' if $base eq '';
  my $qlog = "$qdir/$base.log";
  my $script = "$qdir/$base.sh";
  my $done_prefix = "$qdir/done.$$";
  my @ids = job_ids($job);
  unlink map { "$done_prefix.$_" } @ids;

  my $num_tasks = scalar @ids;
  my @array_opts = $job->{array} ? ($flavor->{array_opt}->($num_tasks, $max_jobs)) : ();
  my $out_opts = $flavor_name eq 'slurm' ? "-o " . sq($qlog) . " --open-mode=append" : "-o " . sq($qlog);
  my $submit = join ' ', $config->{command}, @opts, @array_opts, $out_opts, sq($script);

  open(my $sfh, '>', $script) or fail("cannot write the job script '$script': $!");
  print $sfh job_script(job => $job, flavor => $flavor, cwd => $cwd, done_prefix => File::Spec->rel2abs($done_prefix),
    submit => $submit);
  close $sfh;
  chmod 0755, $script;

  open(my $qfh, '>>', $qlog) or fail("cannot write '$qlog': $!");
  print $qfh "# " . date_string() . ": $submit\n";
  close $qfh;
  my ($rc, $out) = run_shell($submit);
  if (open(my $qfh2, '>>', $qlog)) { print $qfh2 $out; close $qfh2 }
  if ($rc != 0) {
    fail("submitting the job failed (exit code $rc): $submit\n$out");
  }
  my ($jobid) = $out =~ $flavor->{jobid_re};
  print STDERR "$PROG: warning: no job id in the output of '$submit' ($out); "
    . "a job killed by the queue will not be noticed\n" unless defined $jobid;

  my $stop = sub {
    my ($sig) = @_;
    run_shell($flavor->{cancel_cmd}->($jobid)) if defined $jobid;
    print STDERR "$PROG: caught SIG$sig" . (defined $jobid ? ", cancelled job $jobid" : '') . "\n";
    exit 1;
  };
  local $SIG{INT} = $stop;
  local $SIG{TERM} = $stop;
  local $SIG{HUP} = $stop;

  # Wait for the done files; poll fast at first (short jobs), then back off. Every
  # QNET_QUEUE_CHECK_INTERVAL s ask the queue whether the job still exists; when it has been
  # gone for QNET_QUEUE_GRACE s (time for a shared file system to show the files), the tasks
  # without a done file count as failed (killed, out of memory or time).
  my $poll_max = env_seconds('QNET_QUEUE_POLL_MAX', 10);
  my $check_interval = env_seconds('QNET_QUEUE_CHECK_INTERVAL', 120);
  my $grace = env_seconds('QNET_QUEUE_GRACE', 60);
  my %codes;
  my %waiting = map { $_ => 1 } @ids;
  my $wait = 0.02;
  my $next_check = time + $check_interval;
  my $gone_since;
  while (%waiting) {
    for my $id (sort { $a <=> $b } keys %waiting) {
      my $file = "$done_prefix.$id";
      next unless -e $file;
      open(my $fh, '<', $file) or next;
      my $text = <$fh> // '';
      close $fh;
      next unless $text =~ /^(\d+)\s*$/;
      $codes{$id} = $1;
      delete $waiting{$id};
      unlink $file;
    }
    last unless %waiting;
    if (defined $jobid && time >= $next_check) {
      my ($qrc, $qout) = run_shell($flavor->{alive_cmd}->($jobid));
      if ($flavor->{alive}->($qrc, $qout)) {
        undef $gone_since;
      } else {
        $gone_since //= time;
        if (time - $gone_since >= $grace) {
          my @lost = sort { $a <=> $b } keys %waiting;
          print STDERR "$PROG: job $jobid is no longer in the queue, but " . ($job->{array} ? "$job->{var} ids @lost" : "the job")
            . " wrote no exit status (killed, or out of memory or time?); see $qlog\n";
          $codes{$_} = undef for @lost;
          last;
        }
      }
      $next_check = time + ($gone_since ? ($grace < $check_interval ? $grace : $check_interval) : $check_interval);
    }
    sleep $wait;
    $wait *= 1.5;
    $wait = $poll_max if $wait > $poll_max;
  }
  report_and_exit($job, \%codes);
}

1;
