"""Tests of the Kaldi-style shell utilities: utils/parse_options.sh, utils/run.pl, queue.pl, slurm.pl.

run.pl runs for real; queue.pl and slurm.pl run against tests/utils_helpers/fake_scheduler, a stand-in
for qsub/qstat/sbatch/squeue put first on PATH that records its arguments and runs the job script
once per array task (with SGE_TASK_ID / SLURM_ARRAY_TASK_ID set).
"""

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
UTILS = ROOT / "utils"
FAKE_SCHEDULER = ROOT / "tests" / "utils_helpers" / "fake_scheduler"

SGE_COMMAND = ["qsub", "-v", "PATH", "-cwd", "-S", "/bin/bash", "-j", "y", "-l", "arch=*64*"]
SLURM_COMMAND = ["sbatch", "--export=PATH", "--ntasks-per-node=1"]

pytestmark = pytest.mark.skipif(shutil.which("perl") is None, reason="perl is needed")


def run_tool(args: Sequence[str], cwd: Path, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run a command in `cwd` with `env` added to the environment; capture text output."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(list(args), cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60)


def contains_run(seq: List[str], sub: List[str]) -> bool:
    """Whether `sub` occurs in `seq` as consecutive items."""
    return any(seq[i : i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def max_concurrency(intervals: List[Tuple[float, float]]) -> int:
    """The largest number of (start, end) intervals open at the same time."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    best = cur = 0
    for _, step in events:
        cur += step
        best = max(best, cur)
    return best


def job_intervals(tdir: Path, n: int) -> List[Tuple[float, float]]:
    """The (start, end) times the timed jobs 1..n wrote into `tdir`."""
    return [(float((tdir / f"{i}.start").read_text()), float((tdir / f"{i}.end").read_text())) for i in range(1, n + 1)]


TIMED_JOB = "date +%s.%N > t/JOB.start; sleep {sleep}; date +%s.%N > t/JOB.end"

HEADER_RE = r"^# (?P<cmd>.*)\n# Started at \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \S+ \d{4}\n"
FOOTER_RE = (
    r"# Accounting: time=(?P<time>\d+) threads=(?P<threads>\d+)\n"
    r"# Ended \(code (?P<code>\d+)\) at \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \S+ \d{4}, "
    r"elapsed time (?P<elapsed>\d+) seconds\n$"
)


def check_log(path: Path, cmd: str, output: str, code: int = 0, threads: int = 1) -> None:
    """Assert that a job log has the header with `cmd`, the `output`, and the footer with `code`."""
    text = path.read_text()
    head = re.match(HEADER_RE, text)
    assert head, f"bad header in {path}:\n{text}"
    assert head.group("cmd") == cmd
    foot = re.search(FOOTER_RE, text)
    assert foot, f"bad footer in {path}:\n{text}"
    assert int(foot.group("code")) == code
    assert int(foot.group("threads")) == threads
    assert foot.group("time") == foot.group("elapsed")
    assert output in text[head.end() : foot.start()]


# ------------------------------------------------------------------------------------------------
# run.pl


def test_scripts_are_executable_perl():
    for name in ("run.pl", "queue.pl", "slurm.pl"):
        path = UTILS / name
        assert os.access(path, os.X_OK), path
        assert path.read_text().splitlines()[0] == "#!/usr/bin/env perl"
        res = run_tool(["perl", "-c", str(path)], ROOT)
        assert res.returncode == 0, res.stderr
    assert os.access(UTILS / "parse_options.sh", os.X_OK)


def test_run_pl_runs_jobs_in_parallel(tmp_path):
    (tmp_path / "t").mkdir()
    res = run_tool(
        [str(UTILS / "run.pl"), "--max-jobs-run", "3", "JOB=1:3", "exp/log/par.JOB.log", TIMED_JOB.format(sleep=1)],
        tmp_path,
    )
    assert res.returncode == 0, res.stderr
    intervals = job_intervals(tmp_path / "t", 3)
    # All three were running at the same time: the last start precedes the first end.
    assert max(s for s, _ in intervals) < min(e for _, e in intervals)


@pytest.mark.parametrize("limit_args,expected", [(["--max-jobs-run", "2"], 2), (["-tc", "1"], 1)])
def test_run_pl_max_jobs_run_bounds_concurrency(tmp_path, limit_args, expected):
    (tmp_path / "t").mkdir()
    res = run_tool(
        [str(UTILS / "run.pl"), *limit_args, "JOB=1:4", "log/b.JOB.log", TIMED_JOB.format(sleep=0.3)], tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert max_concurrency(job_intervals(tmp_path / "t", 4)) == expected


def test_run_pl_gpu_jobs_default_to_one_per_gpu(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_smi = bin_dir / "nvidia-smi"
    fake_smi.write_text("#!/bin/sh\necho 'GPU 0: Fake GPU (UUID: GPU-0)'\n")
    fake_smi.chmod(0o755)
    (tmp_path / "t").mkdir()
    res = run_tool(
        [str(UTILS / "run.pl"), "--gpu", "1", "JOB=1:3", "log/g.JOB.log", TIMED_JOB.format(sleep=0.2)],
        tmp_path,
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    assert res.returncode == 0, res.stderr
    assert max_concurrency(job_intervals(tmp_path / "t", 3)) == 1


def test_run_pl_substitutes_job_variable_and_writes_logs(tmp_path):
    res = run_tool(
        [str(UTILS / "run.pl"), "--num-threads", "4", "TASK_ID=1:3", "exp/a/log/part.TASK_ID.log",
         "echo", "part", "TASK_ID", "of", "3"],
        tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    for i in range(1, 4):
        check_log(tmp_path / f"exp/a/log/part.{i}.log", f"echo part {i} of 3", f"part {i} of 3\n", threads=4)
    assert sorted(p.name for p in (tmp_path / "exp/a/log").iterdir()) == [f"part.{i}.log" for i in range(1, 4)]


def test_run_pl_single_job_and_single_job_id(tmp_path):
    res = run_tool([str(UTILS / "run.pl"), "one.log", "echo", "hello"], tmp_path)
    assert res.returncode == 0, res.stderr
    check_log(tmp_path / "one.log", "echo hello", "hello\n")
    res = run_tool([str(UTILS / "run.pl"), "JOB=7", "log/seven.JOB.log", "echo", "id=JOB"], tmp_path)
    assert res.returncode == 0, res.stderr
    check_log(tmp_path / "log/seven.7.log", "echo id=7", "id=7\n")


def test_run_pl_reports_failed_jobs(tmp_path):
    res = run_tool(
        [str(UTILS / "run.pl"), "JOB=1:4", "exp/log/foo.JOB.log",
         "echo running JOB; if [ $((JOB % 2)) -eq 0 ]; then exit 3; fi"],
        tmp_path,
    )
    assert res.returncode != 0
    assert "run.pl: 2 / 4 failed, log is in exp/log/foo.*.log" in res.stderr
    assert re.search(r"failed JOB ids: 2 4\b", res.stderr), res.stderr
    assert "exp/log/foo.2.log" in res.stderr and "exp/log/foo.4.log" in res.stderr
    assert "exp/log/foo.1.log" not in res.stderr
    for i in range(1, 5):
        text = (tmp_path / f"exp/log/foo.{i}.log").read_text()
        assert f"running {i}\n" in text
        assert f"# Ended (code {3 if i % 2 == 0 else 0})" in text


def test_run_pl_single_job_failure_message(tmp_path):
    res = run_tool([str(UTILS / "run.pl"), "log/one.log", "exit 5"], tmp_path)
    assert res.returncode != 0
    assert "run.pl: job failed, log is in log/one.log" in res.stderr
    check_log(tmp_path / "log/one.log", "exit 5", "", code=5)


def test_run_pl_refuses_array_without_variable_in_log(tmp_path):
    res = run_tool([str(UTILS / "run.pl"), "JOB=1:2", "log/same.log", "true"], tmp_path)
    assert res.returncode != 0
    assert "log/same.log" in res.stderr and "JOB" in res.stderr
    assert not (tmp_path / "log/same.log").exists()


def test_run_pl_shell_semantics(tmp_path):
    # One argument is a whole command line: pipes and redirections work.
    res = run_tool([str(UTILS / "run.pl"), "log/pipe.log", "echo hello world | tr a-z A-Z > out.txt"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out.txt").read_text() == "HELLO WORLD\n"
    # Several arguments: words with spaces stay one argument, a bare '|' is a pipe (Kaldi's \|).
    res = run_tool([str(UTILS / "run.pl"), "log/args.log", "printf", "%s\\n", "a b", "it's", "|", "wc", "-l"], tmp_path)
    assert res.returncode == 0, res.stderr
    check_log(tmp_path / "log/args.log", "printf '%s\\n' 'a b' 'it'\\''s' | wc -l", "2\n")


def test_run_pl_accepts_and_ignores_queue_options(tmp_path):
    res = run_tool(
        [str(UTILS / "run.pl"), "--mem", "4G", "--num-threads", "1", "--gpu", "0", "--time", "1:00:00",
         "--config", "conf/none.conf", "-l", "hostname=x", "JOB=1:2", "log/o.JOB.log", "echo", "ok"],
        tmp_path,
    )
    assert res.returncode == 0, res.stderr
    check_log(tmp_path / "log/o.2.log", "echo ok", "ok\n")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--mem=4G", "x.log", "true"], "--name value"),
        (["--max-jobs-run", "0", "x.log", "true"], "--max-jobs-run"),
        (["JOB=3:1", "x.JOB.log", "true"], "JOB=3:1"),
        (["x.log"], "no command"),
        (["--gpu"], "--gpu needs a value"),
    ],
)
def test_run_pl_bad_command_lines(tmp_path, args, message):
    res = run_tool([str(UTILS / "run.pl"), *args], tmp_path)
    assert res.returncode != 0
    assert message in res.stderr


def test_run_pl_pick_failed_reruns_only_failed_jobs(tmp_path):
    cmd = "echo JOB >> ran.txt; [ JOB -ne 2 ] || [ -e fixed ]"
    res = run_tool([str(UTILS / "run.pl"), "JOB=1:3", "log/p.JOB.log", cmd], tmp_path)
    assert res.returncode != 0 and "failed JOB ids: 2;" in res.stderr
    (tmp_path / "fixed").touch()
    (tmp_path / "ran.txt").write_text("")
    res = run_tool([str(UTILS / "run.pl"), "--pick", "failed", "JOB=1:3", "log/p.JOB.log", cmd], tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "ran.txt").read_text() == "2\n"
    # incomplete: job 3's log lost its footer, so it reruns; 1 and 2 ended with code 0.
    log3 = tmp_path / "log/p.3.log"
    log3.write_text(log3.read_text().split("# Accounting")[0])
    (tmp_path / "ran.txt").write_text("")
    res = run_tool([str(UTILS / "run.pl"), "--pick", "incomplete", "JOB=1:3", "log/p.JOB.log", cmd], tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "ran.txt").read_text() == "3\n"


# ------------------------------------------------------------------------------------------------
# queue.pl and slurm.pl against the stand-in scheduler


@pytest.fixture
def sched(tmp_path):
    """Environment with qsub/qstat/sbatch/squeue stand-ins first on PATH and fast polling."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for name in ("qsub", "qstat", "sbatch", "squeue"):
        (bin_dir / name).symlink_to(FAKE_SCHEDULER)
    state = tmp_path / "fakestate"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "QNET_FAKE_STATE": str(state),
        "QNET_QUEUE_POLL_MAX": "0.1",
        "QNET_QUEUE_CHECK_INTERVAL": "0.2",
        "QNET_QUEUE_GRACE": "0.3",
    }
    work = tmp_path / "recipe"
    work.mkdir()
    return {"env": env, "state": state, "cwd": work}


def calls(sched, name: str) -> List[List[str]]:
    """The argument lists of every recorded call of stand-in `name`."""
    path = sched["state"] / "calls.txt"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        fields = line.split("\x1f")
        if fields[0] == name:
            out.append(fields[1:])
    return out


def submit(sched, tool: str, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run queue.pl or slurm.pl in the fake recipe folder."""
    full_env = dict(sched["env"])
    full_env.update(env or {})
    return run_tool([str(UTILS / tool), *args], sched["cwd"], full_env)


def test_queue_pl_maps_options_with_default_config(sched):
    res = submit(sched, "queue.pl", "--mem", "4G", "--num-threads", "2", "--gpu", "1", "--max-jobs-run", "2",
                 "--time", "1:00:00", "JOB=1:3", "exp/log/feat.JOB.log", "echo", "feat", "JOB")
    assert res.returncode == 0, res.stderr
    [args] = calls(sched, "qsub")
    assert args[: len(SGE_COMMAND) - 1] == SGE_COMMAND[1:]
    for run in (["-l", "mem_free=4G,ram_free=4G"], ["-pe", "smp", "2"], ["-tc", "2"], ["-l", "h_rt=1:00:00"],
                ["-l", "gpu=1", "-q", "*.q"], ["-t", "1:3"], ["-o", "exp/log/q/feat.log"]):
        assert contains_run(args, run), (run, args)
    assert args[-1] == "exp/log/q/feat.sh"
    assert (sched["cwd"] / "exp/log/q/feat.sh").is_file()
    for i in range(1, 4):
        check_log(sched["cwd"] / f"exp/log/feat.{i}.log", f"echo feat {i}", f"feat {i}\n", threads=2)
    # The per-task exit-status files are cleaned up.
    assert sorted(p.name for p in (sched["cwd"] / "exp/log/q").iterdir()) == ["feat.log", "feat.sh"]


def test_queue_pl_defaults_add_nothing(sched):
    res = submit(sched, "queue.pl", "--mem", "0", "--num-threads", "1", "log/x.log", "echo", "x")
    assert res.returncode == 0, res.stderr
    assert calls(sched, "qsub") == [SGE_COMMAND[1:] + ["-o", "log/q/x.log", "log/q/x.sh"]]
    check_log(sched["cwd"] / "log/x.log", "echo x", "x\n")


def test_queue_pl_config_file_lookup(sched):
    conf = sched["cwd"] / "conf"
    conf.mkdir()
    (conf / "queue.conf").write_text("# site config\ncommand qsub -q short.q\noption mem=* -l h_vmem=$0\n")
    res = submit(sched, "queue.pl", "--mem", "2G", "log/a.log", "true")
    assert res.returncode == 0, res.stderr
    (other := sched["cwd"] / "other.conf").write_text("command qsub -P proj\noption mem=* -l m=$0  # comment\n")
    res = submit(sched, "queue.pl", "--config", str(other), "--mem", "3G", "log/b.log", "true")
    assert res.returncode == 0, res.stderr
    assert calls(sched, "qsub") == [
        ["-q", "short.q", "-l", "h_vmem=2G", "-o", "log/q/a.log", "log/q/a.sh"],
        ["-P", "proj", "-l", "m=3G", "-o", "log/q/b.log", "log/q/b.sh"],
    ]
    # An option that the config does not describe is an error naming it.
    res = submit(sched, "queue.pl", "--gpu", "1", "log/c.log", "true")
    assert res.returncode != 0
    assert "--gpu 1" in res.stderr and "conf/queue.conf" in res.stderr
    (conf / "queue.conf").write_text("command qsub\nwhatever line\n")
    res = submit(sched, "queue.pl", "log/d.log", "true")
    assert res.returncode != 0 and "conf/queue.conf line 2" in res.stderr


def test_queue_pl_passes_native_options_and_offsets_ranges(sched):
    res = submit(sched, "queue.pl", "-l", "hostname=node1", "-V", "JOB=3:4", "log/r.JOB.log", "echo", "JOB")
    assert res.returncode == 0, res.stderr
    [args] = calls(sched, "qsub")
    assert contains_run(args, ["-l", "hostname=node1", "-V"]) and contains_run(args, ["-t", "1:2"])
    check_log(sched["cwd"] / "log/r.3.log", "echo 3", "3\n")
    check_log(sched["cwd"] / "log/r.4.log", "echo 4", "4\n")


def test_queue_pl_absolute_log_path_and_single_job(sched, tmp_path):
    log_dir = tmp_path / "elsewhere" / "log"
    res = submit(sched, "queue.pl", "--max-jobs-run", "4", f"{log_dir}/one.log", "echo", "single")
    assert res.returncode == 0, res.stderr
    # No -tc for a single job; the job script and qsub output live in <logdir>/q.
    assert calls(sched, "qsub") == [SGE_COMMAND[1:] + ["-o", f"{log_dir}/q/one.log", f"{log_dir}/q/one.sh"]]
    check_log(log_dir / "one.log", "echo single", "single\n")


def test_queue_pl_reports_failed_task(sched):
    res = submit(sched, "queue.pl", "JOB=1:3", "exp/log/t.JOB.log", "echo task JOB; [ JOB -ne 2 ]")
    assert res.returncode != 0
    assert "queue.pl: 1 / 3 failed, log is in exp/log/t.*.log" in res.stderr
    assert "failed JOB ids: 2; logs: exp/log/t.2.log" in res.stderr
    check_log(sched["cwd"] / "exp/log/t.2.log", "echo task 2; [ 2 -ne 2 ]", "task 2\n", code=1)
    check_log(sched["cwd"] / "exp/log/t.3.log", "echo task 3; [ 3 -ne 2 ]", "task 3\n", code=0)


def test_queue_pl_detects_killed_task(sched):
    res = submit(sched, "queue.pl", "JOB=1:3", "log/k.JOB.log", "echo", "JOB", env={"QNET_FAKE_SKIP_TASKS": "2"})
    assert res.returncode != 0
    assert "no longer in the queue" in res.stderr
    assert "queue.pl: 1 / 3 failed" in res.stderr and "failed JOB ids: 2;" in res.stderr
    assert calls(sched, "qstat"), "queue.pl never asked qstat about the job"


def test_queue_pl_submit_failure(sched):
    res = submit(sched, "queue.pl", "log/f.log", "true", env={"QNET_FAKE_SUBMIT_RC": "2"})
    assert res.returncode != 0
    assert "submitting the job failed" in res.stderr and "fake submission failure" in res.stderr


def test_queue_pl_job_sources_path_sh_and_runs_shell(sched):
    (sched["cwd"] / "path.sh").write_text("export QNET_TEST_GREETING=hello\n")
    res = submit(sched, "queue.pl", "log/p.log", "echo $QNET_TEST_GREETING there | wc -w")
    assert res.returncode == 0, res.stderr
    check_log(sched["cwd"] / "log/p.log", "echo $QNET_TEST_GREETING there | wc -w", "2\n")


def test_slurm_pl_maps_options_with_default_config(sched):
    res = submit(sched, "slurm.pl", "--mem", "4G", "--num-threads", "2", "--gpu", "1", "--time", "2:00:00",
                 "--max-jobs-run", "2", "JOB=1:3", "exp/log/x.JOB.log", "echo", "x", "JOB")
    assert res.returncode == 0, res.stderr
    [args] = calls(sched, "sbatch")
    assert args[: len(SLURM_COMMAND) - 1] == SLURM_COMMAND[1:]
    for run in (["--mem-per-cpu", "4G"], ["--cpus-per-task", "2", "--ntasks-per-node=1"],
                ["-p", "gpu", "--gres=gpu:1", "--time", "4:0:0"], ["--array=1-3%2"], ["-o", "exp/log/q/x.log"]):
        assert contains_run(args, run), (run, args)
    # --time given after --gpu comes later, so it wins over the gpu line's --time.
    assert args.index("2:00:00") > args.index("4:0:0")
    assert args[-1] == "exp/log/q/x.sh"
    for i in range(1, 4):
        check_log(sched["cwd"] / f"exp/log/x.{i}.log", f"echo x {i}", f"x {i}\n", threads=2)


def test_slurm_pl_default_partition_and_array(sched):
    res = submit(sched, "slurm.pl", "JOB=1:2", "log/s.JOB.log", "echo", "JOB")
    assert res.returncode == 0, res.stderr
    assert calls(sched, "sbatch") == [
        SLURM_COMMAND[1:] + ["-p", "shared", "--array=1-2", "-o", "log/q/s.log", "--open-mode=append", "log/q/s.sh"]
    ]


def test_slurm_pl_reports_failed_and_killed_tasks(sched):
    res = submit(sched, "slurm.pl", "JOB=1:4", "log/f.JOB.log", "[ JOB -ne 3 ]", env={"QNET_FAKE_SKIP_TASKS": "4"})
    assert res.returncode != 0
    assert "slurm.pl: 2 / 4 failed, log is in log/f.*.log" in res.stderr
    assert "failed JOB ids: 3 4;" in res.stderr and "no longer in the queue" in res.stderr
    assert calls(sched, "squeue")
    check_log(sched["cwd"] / "log/f.3.log", "[ 3 -ne 3 ]", "", code=1)


@pytest.mark.parametrize("tool,conf", [("queue.pl", "queue.conf"), ("slurm.pl", "slurm.conf")])
@pytest.mark.parametrize(
    "options",
    [[], ["--mem", "4G", "--num-threads", "1"], ["--num-threads", "3", "--gpu", "2", "--time", "1:00:00",
                                                 "--max-jobs-run", "2", "--mem", "0"]],
)
def test_shipped_configs_equal_builtin_defaults(sched, tool, conf, options):
    res = submit(sched, tool, *options, "JOB=1:2", "log/d.JOB.log", "true")
    assert res.returncode == 0, res.stderr
    res = submit(sched, tool, "--config", str(ROOT / "conf" / conf), *options, "JOB=1:2", "log/d.JOB.log", "true")
    assert res.returncode == 0, res.stderr
    name = "qsub" if tool == "queue.pl" else "sbatch"
    builtin, shipped = calls(sched, name)
    assert builtin == shipped


# ------------------------------------------------------------------------------------------------
# conf/cmd.sh


def test_cmd_sh_defaults_to_run_pl_and_has_cluster_lines(tmp_path):
    cmd_sh = ROOT / "conf" / "cmd.sh"
    script = f'set -euo pipefail; . {cmd_sh}; printf "%s\\n" "$train_cmd" "$decode_cmd" "$cuda_cmd"'
    res = run_tool(["bash", "-c", script], tmp_path)
    assert res.returncode == 0, res.stderr
    values = res.stdout.splitlines()
    assert len(values) == 3 and all(v.split()[0] == "run.pl" for v in values)
    text = cmd_sh.read_text()
    for tool in ("slurm.pl", "queue.pl"):
        for var in ("train_cmd", "decode_cmd", "cuda_cmd"):
            assert re.search(rf'^# export {var}="{tool}\b', text, re.M), (tool, var)
    # Every command from cmd.sh runs (utils/ on PATH, as path.sh does).
    env = {"PATH": f"{UTILS}:{os.environ['PATH']}"}
    for i, value in enumerate(values):
        res = run_tool(["bash", "-c", f'{value} JOB=1:2 log/c{i}.JOB.log echo ok JOB'], tmp_path, env)
        assert res.returncode == 0, res.stderr
        check_log(tmp_path / f"log/c{i}.2.log", "echo ok 2", "ok 2\n")


# ------------------------------------------------------------------------------------------------
# parse_options.sh

OPTIONS_SCRIPT = """#!/usr/bin/env bash
set -euo pipefail
stage=0
foo_bar=default
use_gpu=false
cmd=run.pl
help_message="Usage: demo.sh [options] <in> <out>
  --stage N      first stage"
. {parse_options}
printf 'stage=%s\\nfoo_bar=%s\\nuse_gpu=%s\\ncmd=%s\\nnargs=%s\\n' "$stage" "$foo_bar" "$use_gpu" "$cmd" "$#"
for a in "$@"; do printf 'arg=%s\\n' "$a"; done
"""


@pytest.fixture
def demo(tmp_path):
    """A script using parse_options.sh under `set -euo pipefail`; returns a runner for it."""
    script = tmp_path / "demo.sh"
    script.write_text(OPTIONS_SCRIPT.format(parse_options=UTILS / "parse_options.sh"))
    script.chmod(0o755)

    def run(*args: str) -> subprocess.CompletedProcess:
        return run_tool([str(script), *args], tmp_path)

    return run


def parsed(res: subprocess.CompletedProcess) -> Dict[str, object]:
    """The variables and positional arguments printed by the demo script."""
    out: Dict[str, object] = {"arg": []}
    for line in res.stdout.splitlines():
        key, value = line.split("=", 1)
        if key == "arg":
            out["arg"].append(value)
        else:
            out[key] = value
    return out


def test_parse_options_sets_variables_and_stops_at_positional(demo):
    res = demo("--foo-bar", "a value  with spaces", "--stage", "3", "--use-gpu", "true", "in dir", "--stage", "9")
    assert res.returncode == 0, res.stderr
    vals = parsed(res)
    assert vals["foo_bar"] == "a value  with spaces"
    assert vals["stage"] == "3" and vals["use_gpu"] == "true"
    assert vals["nargs"] == "3" and vals["arg"] == ["in dir", "--stage", "9"]
    res = demo("--stage", "2", "--", "--not-an-option")
    assert parsed(res)["arg"] == ["--not-an-option"]
    res = demo("--cmd", "queue.pl --mem 4G")
    assert parsed(res)["cmd"] == "queue.pl --mem 4G" and parsed(res)["nargs"] == "0"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--no-such-thing", "1"], "invalid option --no-such-thing"),
        (["--use-gpu", "yes"], "true or false"),
        (["--stage=3"], "--name value"),
        (["--stage"], "--stage needs a value"),
        (["--cmd", ""], "empty argument to the --cmd option"),
        (["--config", "missing.conf"], "missing.conf"),
    ],
)
def test_parse_options_errors(demo, args, message):
    res = demo(*args)
    assert res.returncode == 1
    assert message in res.stderr
    assert res.stdout == ""


def test_parse_options_config_has_lower_priority(demo, tmp_path):
    (tmp_path / "a.conf").write_text('stage=5\nfoo_bar="from config"\nuse_gpu=true\n')
    (tmp_path / "b.conf").write_text("stage=6\n")
    vals = parsed(demo("--config", "a.conf"))
    assert (vals["stage"], vals["foo_bar"], vals["use_gpu"]) == ("5", "from config", "true")
    # Command-line options win whatever their position; later config files win over earlier ones.
    vals = parsed(demo("--stage", "2", "--config", "a.conf", "pos"))
    assert (vals["stage"], vals["foo_bar"], vals["arg"]) == ("2", "from config", ["pos"])
    vals = parsed(demo("--config", "a.conf", "--config", "b.conf"))
    assert vals["stage"] == "6"


def test_parse_options_help(demo):
    for args in (["--help"], ["-h"], ["--stage", "1", "--help", "x"]):
        res = demo(*args)
        assert res.returncode == 0
        assert res.stdout.startswith("Usage: demo.sh [options] <in> <out>\n  --stage N")
