"""Launch scripts: valid bash, and the TPU-pod script runs the same command on every worker."""

import os
import pathlib
import subprocess

import pytest

LAUNCH = pathlib.Path(__file__).resolve().parents[1] / "launch"


@pytest.mark.parametrize("name", ["tpu_pod.sh", "local_gpu.sh", "gpu_bench.sh"])
def test_bash_syntax(name):
    subprocess.run(["bash", "-n", str(LAUNCH / name)], check=True)


def test_tpu_pod_dry_run(tmp_path):
    env = dict(os.environ, DRY_RUN="1", WORKERS="2")
    out = subprocess.run(["bash", str(LAUNCH / "tpu_pod.sh"), "vp-v5e-16", "us-west4-a",
                          "configs/robustness.py:qwen2.5-72b-instruct", "gs://bkt/rob",
                          "--mesh", "fsdp=8,tensor=2"], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert len(out) == 3
    assert out[0].startswith("gcloud compute tpus tpu-vm scp ") and "--worker=all" in out[0]
    run = out[1]
    assert run.startswith("gcloud compute tpus tpu-vm ssh vp-v5e-16 --zone us-west4-a --worker=all")
    for part in ("pip install -q -c constraints.txt -e \\'.[tpu]\\' gcsfs", "export VALUEPROBE_DISTRIBUTED=1",
                 "valueprobe run --config configs/robustness.py:qwen2.5-72b-instruct "
                 "--workdir gs://bkt/rob"):
        assert part in run, part
    assert "gcsfuse" not in run and "gcs/bkt" not in run  # the bucket is written directly
    assert "--worker=0" in out[2] and "valueprobe merge gs://bkt/rob" in out[2].replace("\\", "")


def _readme_commands() -> list[str]:
    """The indented command lines of README's "Two commands for a fresh machine" section."""
    text = (LAUNCH.parent / "README.md").read_text()
    section = text.split("## Two commands for a fresh machine", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ") and line.strip()]


def test_ci_runs_both_readme_commands_in_order():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    ci = (LAUNCH.parent / ".ci" / "run").read_text().splitlines()
    where = []
    for cmd in commands:
        hits = [i for i, line in enumerate(ci) if line.rstrip().endswith(cmd)]
        assert hits, f"{cmd!r} is not in .ci/run"
        where.append(hits[0])
    assert where == sorted(where), "CI must run the main job before the tests"
    # each in a fresh environment: .venv is removed after the previous command and before this one
    for before, i in zip([0] + where[:-1], where):
        assert any(line.startswith("rm -rf .venv") for line in ci[before:i]), ci[i]
