"""Batch cluster configs (kind slurm, pbs, ...): validated like the local kind, mapped onto
dask-jobqueue's own job scripts, previewed with ``mlorch cluster script``. No scheduler needed."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mlorch as mo
from mlorch.app import jobqueue_spec
from mlorch.config import load_cluster_config
from mlorch.execution.jobqueue import job_script


def script(tmp_path, text: str) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return job_script(jobqueue_spec(load_cluster_config(path), str(path)))


def test_slurm_fields_become_sbatch_directives_and_worker_flags(tmp_path):
    text = script(
        tmp_path,
        "kind: slurm\nqueue: gpu\naccount: my-project\nwalltime: '02:00:00'\ncores: 4\nmemory: 16GB\n"
        "gpus_per_job: 2\njob_extra_directives: ['--constraint=a100']\njobs: {min: 0, max: 8}\n"
        "env: {WANDB_MODE: 'off'}\njobqueue: {job_script_prologue: ['module load cuda']}\n",
    )
    for line in (
        "#SBATCH -p gpu",
        "#SBATCH -A my-project",
        "#SBATCH -t 02:00:00",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --constraint=a100",
        "#SBATCH --gres=gpu:2",
        "export WANDB_MODE=off",
        "export MLFLOW_DISABLE_TELEMETRY=true",
        "module load cuda",
        "export MLORCH_WORKERS_PER_JOB=2",
    ):
        assert line in text.splitlines(), line
    command = text.splitlines()[-2]
    assert "--nworkers 2" in command and "--nthreads 2" in command  # one process per GPU, cores split
    assert "--resources GPU=1" in command and "--preload-nanny mlorch.execution.gpu_pin" in command
    # leave 10% (at most 5 min) before the walltime, staggered so workers do not all leave at once
    assert "--lifetime 6900s --lifetime-stagger 75s" in command
    assert command.split()[3].startswith("tls://") and "--tls-key" in command  # TLS unless turned off


def test_security_off_is_explicit_and_plain_tcp(tmp_path):
    text = script(tmp_path, "kind: slurm\nsecurity: false\nleave_before_walltime: null\n")
    assert "tcp://" in text and "--tls" not in text and "--lifetime" not in text


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("pbs", ["#PBS -q batch", "#PBS -l walltime=00:30:00", "#PBS -A acct"]), ("sge", ["#$ -q batch", "#$ -l h_rt=00:30:00"])],
)
def test_other_kinds_go_through_the_same_path(tmp_path, kind, expected):
    account = "account: acct\n" if kind == "pbs" else ""
    text = script(tmp_path, f"kind: {kind}\nqueue: batch\nwalltime: '00:30:00'\ncores: 2\nmemory: 2GB\n{account}")
    lines = text.splitlines()
    for line in expected:
        assert line in lines, (line, text)
    assert "distributed.cli.dask_worker tls://" in text and "--lifetime 1620s" in text


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("kind: slurm\nwaltime: '01:00:00'\n", r"unknown field 'waltime'; did you mean 'walltime'\?"),
        ("kind: slurm\nwalltime: '1:99:00'\n", r"field 'walltime': .*out of range"),
        ("kind: slurm\nwalltime: soon\n", r"field 'walltime': .*not HH:MM:SS"),
        ("kind: slurm\nmemory: banana\n", r"field 'memory': .*not a byte size"),
        ("kind: slurm\njobs: {min: 3, max: 2}\n", r"min \(3\) is larger than max \(2\)"),
        ("kind: slurm\njobs: {mx: 2}\n", r"unknown field 'jobs.mx'; did you mean 'max'\?"),
        ("kind: slurm\ngpus_per_job: 2\nprocesses: 1\ncores: 2\n", r"processes \(1\) must equal gpus_per_job \(2\)"),
        (
            "kind: slurm\ngpus_per_job: 4\ncores: 2\n",
            r"cores \(2\) is less than gpus_per_job \(4\): each worker process needs a core",
        ),
        ("kind: slurm\nsecurity: 'no'\n", r"field 'security'"),
        ("kind: slurm\nwalltime: '00:01:00'\nleave_before_walltime: 2m\n", r"leave_before_walltime .* not shorter than walltime"),
        ("kind: slurmm\n", r"unknown cluster kind 'slurmm'; did you mean 'slurm'\?"),
    ],
)
def test_bad_fields_name_the_file_and_the_field(tmp_path, yaml_text, message):
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml_text)
    with pytest.raises(mo.ConfigError, match=message) as info:
        load_cluster_config(path)
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "kind: slurm\njobqueue: {job_script_prologe: [x]}\n",
            r"'jobqueue.job_script_prologe' is not a keyword of SLURMCluster; did you mean 'job_script_prologue'\?",
        ),
        ("kind: slurm\njobqueue: {processes: 3}\n", r"'jobqueue.processes': set it with mlorch's field 'processes'"),
        ("kind: slurm\njobqueue: {walltime: '01:00:00'}\n", r"'jobqueue.walltime': set it with mlorch's field 'walltime'"),
        ("kind: htcondor\naccount: a\njobqueue: {disk: 1GB}\n", r"field 'account' is not supported by kind 'htcondor'"),
    ],
)
def test_pass_through_keywords_are_checked_against_dask_jobqueue(tmp_path, yaml_text, message):
    with pytest.raises(mo.ConfigError, match=message):
        script(tmp_path, yaml_text)


def test_pass_through_keywords_reach_the_job_script(tmp_path):
    text = script(tmp_path, "kind: slurm\njobqueue: {python: /opt/py/bin/python3, job_directives_skip: ['--mem']}\n")
    assert "/opt/py/bin/python3 -m distributed.cli.dask_worker" in text
    assert "--mem=" not in text


def test_cli_prints_the_job_script_and_rejects_local_kinds(tmp_path):
    path = tmp_path / "slurm.yaml"
    path.write_text("kind: slurm\nqueue: gpu\ngpus_per_job: 1\n")
    out = subprocess.run([sys.executable, "-m", "mlorch", "cluster", "script", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "#SBATCH --gres=gpu:1" in out.stdout and "#SBATCH -p gpu" in out.stdout
    local = tmp_path / "local.yaml"
    local.write_text("kind: local\n")
    out = subprocess.run([sys.executable, "-m", "mlorch", "cluster", "script", str(local)], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{local}: kind 'local' submits no job script" in out.stderr


def test_shipped_slurm_config_previews(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mlorch", "cluster", "script", "configs/cluster/slurm.yaml"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "#SBATCH --gres=gpu:1" in out.stdout and "#SBATCH --constraint=a100" in out.stdout


def test_missing_submit_command_is_named_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(mo.ClusterError, match="the command 'sbatch' is not on PATH"):
        mo.cluster({"kind": "slurm"})


def test_gpu_pinning_picks_the_worker_s_own_device():
    from mlorch.execution.gpu_pin import device_for

    assert device_for("mlorch-3-0", "4,7", 2) == "4"
    assert device_for("mlorch-3-1", "4,7", 2) == "7"
    assert device_for("mlorch-3", "5", 1) == "5"
    assert device_for("mlorch-3", "", 1) is None


def test_loading_dask_jobqueue_keeps_ctrl_c_an_interrupt():
    code = (
        "import signal, sys\n"
        "from mlorch.execution.jobqueue import cluster_class\n"
        "cluster_class('slurm')\n"
        "assert 'dask_jobqueue.runner' in sys.modules\n"
        "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr
