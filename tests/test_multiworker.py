"""Multi-worker training: TF_CONFIG checks, and two real worker processes on this machine.

The process tests are slow (each starts two TensorFlow processes that talk gRPC over
localhost ports, on the CPU): a tiny synthetic dataset, 32 px and random weights keep a
whole run to about a minute on 2 cores.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from core import config
from core.__main__ import main
from core.storage import runs
from core.train.distributed import parse_tf_config
from core.train.train_config import TrainConfig

TINY_RUN = [
    "--backbone",
    "mobilenet_v3_small",
    "--image-size",
    "32",
    "--weights",
    "none",
    "--epochs",
    "2",
    "--fine-tune-epochs",
    "1",
    "--threshold-rule",
    "sensitivity",
    "--no-tta",
    "--strategy",
    "multiworker",
]


def tf_config(workers: int, role: str = "worker", index: int = 0, chief: bool = False) -> str:
    cluster: dict = {"worker": [f"host{number}:2222" for number in range(workers)]}
    if chief:
        cluster["chief"] = ["boss:2222"]
    return json.dumps({"cluster": cluster, "task": {"type": role, "index": index}})


def test_worker_zero_is_chief_without_a_chief_task():
    assert parse_tf_config(tf_config(2, index=0)).is_chief
    second = parse_tf_config(tf_config(2, index=1))
    assert not second.is_chief and second.workers == 2


def test_the_chief_task_is_chief_and_worker_zero_is_not():
    assert parse_tf_config(tf_config(2, role="chief", chief=True)).is_chief
    assert not parse_tf_config(tf_config(2, index=0, chief=True)).is_chief


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("{cluster", "not valid JSON"),
        ("[1, 2]", "needs a cluster"),
        ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps"}}', "'ps'"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief"}}', "task must name"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "0 to 0"),
        ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker"}}', "host:port"),
        ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker"}}', "list of host:port"),
    ],
)
def test_missing_or_malformed_tf_config_is_a_clear_error(text, message):
    with pytest.raises(ValueError, match=message):
        parse_tf_config(text)


def test_multiworker_is_a_strategy_and_others_are_refused():
    TrainConfig(data_dir="x", strategy="multiworker").validate()
    with pytest.raises(ValueError, match="multiworker"):
        TrainConfig(data_dir="x", strategy="horovod").validate()


def test_cli_without_tf_config_says_so_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setattr(config, "MODELS_DIR", tmp_path / "models")
    status = main(["train", "--data", str(config.SAMPLE_DIR / "images"), *TINY_RUN])
    assert status == 2 and "TF_CONFIG" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("localhost", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def start_workers(data_dir: Path, folder: Path, extra=((), ())) -> list[subprocess.Popen]:
    """Two workers of one cluster on localhost; worker i's output goes to folder/worker{i}.txt."""
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    processes = []
    for index in (0, 1):
        environment = {
            **os.environ,
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
            "DERMO_MODELS_DIR": str(folder / "models"),
            "DERMO_CACHE_DIR": str(folder / "cache"),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            # Worker 1's temporary folder, so that a killed worker leaves nothing elsewhere.
            "TMPDIR": str(folder),
        }
        arguments = ["train", "--data", str(data_dir), *TINY_RUN, "--activate", *extra[index]]
        with open(folder / f"worker{index}.txt", "w") as output:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "core", *arguments],
                    cwd=config.REPO_ROOT,
                    env=environment,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            )
    return processes


def finish(processes: list[subprocess.Popen], timeout: float = 300) -> list[int]:
    try:
        return [process.wait(timeout=timeout) for process in processes]
    finally:
        for process in processes:
            process.kill()


def epoch_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if " loss " in line]


def wait_for_text(path: Path, text: str, process: subprocess.Popen, timeout: float = 240):
    """Polls a worker's output: another process's progress has no other signal to wait on."""
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} in {path.name}:\n{path.read_text()}")
        time.sleep(0.5)


@pytest.fixture
def workers_folder(tmp_path) -> Path:
    (tmp_path / "models").mkdir()
    return tmp_path


@pytest.mark.slow
def test_two_workers_make_one_run_both_trained(make_dataset, workers_folder):
    data_dir = make_dataset("folders", n_benign=30, n_malignant=30)
    codes = finish(start_workers(data_dir, workers_folder))
    outputs = [workers_folder / f"worker{index}.txt" for index in (0, 1)]
    assert codes == [0, 0], "\n".join(path.read_text() for path in outputs)
    [run] = runs.list_runs(workers_folder / "models")[0]
    assert sorted(path.name for path in (workers_folder / "models").iterdir()) == sorted(
        [run.run_id, config.LOCAL_ACTIVE_FILE_NAME]
    )
    assert runs.active_run_id(workers_folder / "models") == run.run_id
    # Too few images for an OOD detector (ood.npz) and no cross-validation: the rest.
    tables = (runs.HISTORY_FILE, runs.TEST_PREDICTIONS_FILE, runs.SPLIT_FILE)
    assert all((run.folder / name).is_file() for name in (runs.MODEL_FILE, *tables))
    history = pd.read_csv(run.folder / runs.HISTORY_FILE)
    train_images = int((pd.read_csv(run.folder / runs.SPLIT_FILE)["split"] == "train").sum())
    # Every epoch saw the whole training split, and the chief only its share of it.
    assert (history["replicas"] == 2).all() and (history["examples"] == train_images).all()
    assert history["worker_examples"].between(1, train_images - 1).all()
    # Worker 1 ran the same epochs and read the same losses, summed over both workers.
    assert epoch_lines(outputs[1]) == epoch_lines(outputs[0])
    assert len(epoch_lines(outputs[0])) == len(history) == 3
    # Its own copy of the run went to a temporary folder, gone now.
    saved_in = outputs[1].read_text().split(" copy in ")[1].split(" is temporary")[0]
    assert Path(saved_in).is_relative_to(workers_folder) and not Path(saved_in).exists()


@pytest.mark.slow
def test_a_killed_worker_leaves_no_run_and_the_active_model(make_dataset, workers_folder):
    data_dir = make_dataset("folders", n_benign=30, n_malignant=30)
    models = workers_folder / "models"
    runs.write_json_atomic(models / config.LOCAL_ACTIVE_FILE_NAME, {"run_id": "earlier-run"})
    chief, worker = start_workers(data_dir, workers_folder)
    try:
        wait_for_text(workers_folder / "worker1.txt", "head: epoch 1/2 loss", worker)
        worker.kill()
        # The chief's collectives fail once the worker stops answering; it gives up alone.
        assert chief.wait(timeout=240) != 0
    finally:
        finish([chief, worker], timeout=1)
    assert [path.name for path in models.iterdir()] == [config.LOCAL_ACTIVE_FILE_NAME]
    assert runs.active_run_id(models) == "earlier-run"


@pytest.mark.slow
def test_workers_with_different_splits_refuse_to_train(make_dataset, workers_folder):
    data_dir = make_dataset("folders", n_benign=30, n_malignant=30)
    codes = finish(start_workers(data_dir, workers_folder, extra=((), ("--seed", "7"))))
    assert codes == [2, 2]
    for index in (0, 1):
        assert (
            "do not see the same images or split"
            in (workers_folder / f"worker{index}.txt").read_text()
        )
    assert not any((workers_folder / "models").iterdir())
