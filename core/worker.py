"""Training in the background, in its own process, owned by core.

A page starts a job, polls its status and may cancel it; the job survives page changes and
browser reloads because it is a separate process that writes its state to files:
MODELS_DIR/.jobs/<job_id>/{config.json, status.json, log.txt, cancel}. One job runs at a
time. The job never touches the database: the app ingests the finished run folder.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core import runs
from core.train_config import TrainConfig

JOBS_FOLDER = ".jobs"
RUNNING = "running"
FINISHED_STATES = ("succeeded", "failed", "cancelled")
# What each training stage is called on the page; unknown stages read as their own name.
STAGE_NAMES = {
    "starting": "Starting the training process",
    "weights": "Checking the backbone weights",
    "crossval": "Cross-validating by source",
    "data": "Checking and decoding the images",
    "features": "Computing backbone features",
    "head": "Training the head (backbone frozen)",
    "fine_tune": "Fine-tuning the backbone",
    "evaluate": "Scoring the validation and test splits",
    "done": "Saving the run",
}


class TrainingBusyError(RuntimeError):
    """A second training was asked for while one is running."""


@dataclass
class JobStatus:
    job_id: str
    state: str = RUNNING
    stage: str = "starting"
    message: str = "Starting"
    pid: int | None = None
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches: int = 0
    phase_started_at: float | None = None
    history: list[dict] = field(default_factory=list)
    run_id: str | None = None
    error: str | None = None

    @property
    def elapsed_seconds(self) -> float:
        return (
            self.updated_at - self.started_at if self.finished else time.time() - self.started_at
        )

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def stage_name(self) -> str:
        return STAGE_NAMES.get(self.stage, self.stage.replace("_", " ").capitalize())

    @property
    def fraction(self) -> float | None:
        """How far through its epochs the current phase is; None outside epochs and between
        phases (the work there has no measurable progress)."""
        if self.finished or not self.epochs or not self.batches:
            return None
        done = (self.epoch - 1 + self.batch / self.batches) / self.epochs
        return done if 0 < done < 1 else None

    @property
    def remaining_seconds(self) -> float | None:
        """Time left in the current phase, from its progress so far."""
        done = self.fraction
        if done is None or not self.phase_started_at:
            return None
        spent = time.time() - self.phase_started_at
        return spent * (1 - done) / done


def jobs_dir(directory: Path | None = None) -> Path:
    return runs.models_dir(directory) / JOBS_FOLDER


def read_status(job_id: str, directory: Path | None = None) -> JobStatus:
    path = jobs_dir(directory) / job_id / "status.json"
    status = JobStatus(**json.loads(path.read_text()))
    if status.state == RUNNING and not _process_alive(status.pid):
        # The process died without writing a final state: killed, out of memory, crashed.
        status.state, status.error = "failed", "the training process ended unexpectedly"
        status.message = f"Failed: {status.error}"
        write_status(status, directory)
    return status


def write_status(status: JobStatus, directory: Path | None = None) -> None:
    status.updated_at = time.time()
    runs.write_json_atomic(jobs_dir(directory) / status.job_id / "status.json", asdict(status))


def _process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A finished child that nobody waited for is a zombie: reap it so it counts as dead.
    try:
        finished_pid, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return finished_pid == 0


def latest_job(directory: Path | None = None) -> JobStatus | None:
    folder = jobs_dir(directory)
    if not folder.is_dir():
        return None
    job_ids = sorted(path.name for path in folder.iterdir() if (path / "status.json").is_file())
    return read_status(job_ids[-1], directory) if job_ids else None


def start_training(
    train_config: TrainConfig, directory: Path | None = None, activate: bool = False
) -> str:
    """Start a training process for `train_config`; returns the job id."""
    train_config.validate()
    current = latest_job(directory)
    if current is not None and not current.finished:
        raise TrainingBusyError(f"training {current.job_id} is still running; wait or cancel it")
    job_id = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid() % 10000:04d}"
    folder = jobs_dir(directory) / job_id
    folder.mkdir(parents=True)
    payload = {"config": asdict(train_config), "activate": activate}
    (folder / "config.json").write_text(json.dumps(payload, indent=2))
    command = [sys.executable, "-m", "core", "worker", str(folder)]
    environment = {**os.environ, "DERMO_MODELS_DIR": str(runs.models_dir(directory))}
    with open(folder / "log.txt", "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # A Streamlit rerun or stop must not kill the job.
            env=environment,
        )
    write_status(JobStatus(job_id=job_id, pid=process.pid), directory)
    return job_id


def cancel(job_id: str, directory: Path | None = None) -> None:
    """Ask the job to stop; it checks between batches and leaves the active model alone."""
    folder = jobs_dir(directory) / job_id
    (folder / "cancel").touch()
    status = read_status(job_id, directory)
    if status.pid and not status.finished:
        with contextlib.suppress(ProcessLookupError):
            os.kill(status.pid, signal.SIGTERM)


def wait(
    job_id: str,
    timeout: float = 3600,
    directory: Path | None = None,
    until: Callable[[JobStatus], bool] | None = None,
) -> JobStatus:
    """Block until the job finishes, or until `until(status)` holds (for tests and scripts).

    Raises TimeoutError after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        status = read_status(job_id, directory)
        if status.finished or (until is not None and until(status)):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"training {job_id} still running after {timeout} s")
        time.sleep(0.5)


class _JobReporter:
    """Turns training progress into status.json updates and honours cancellation."""

    def __init__(self, status: JobStatus, folder: Path):
        self.status, self.folder = status, folder
        self.cancelled = False
        self.last_write = 0.0
        signal.signal(signal.SIGTERM, self._on_terminate)

    def _on_terminate(self, signum, frame) -> None:
        self.cancelled = True

    def should_stop(self) -> bool:
        return self.cancelled or (self.folder / "cancel").exists()

    def __call__(self, progress) -> None:
        from core.training import Cancelled

        if self.should_stop():
            raise Cancelled("training was cancelled")
        status = self.status
        if progress.stage != status.stage:
            status.phase_started_at = time.time()
            status.batch = status.batches = 0
        status.stage, status.message = progress.stage, progress.message
        status.epoch, status.epochs = progress.epoch, progress.epochs
        # Epoch-end reports carry no batch counts: the last batch report still holds.
        if progress.batches:
            status.batch, status.batches = progress.batch, progress.batches
        if progress.logs:
            status.history.append(progress.logs)
        # Batch reports come many times a second; writing them all would only cost time.
        if progress.logs or progress.batch == 0 or time.time() - self.last_write > 1.0:
            self.last_write = time.time()
            write_status(status, self.folder.parent.parent)
        print(progress.message, flush=True)


def _started_at(folder: Path) -> float:
    try:
        return float(json.loads((folder / "status.json").read_text())["started_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return time.time()


def run_job(folder: Path) -> int:
    """The body of the training process started by `start_training`."""
    from core.training import Cancelled, train

    folder = Path(folder)
    directory = folder.parent.parent
    payload = json.loads((folder / "config.json").read_text())
    # One clock from the click: keep the start time that start_training recorded.
    status = JobStatus(job_id=folder.name, pid=os.getpid(), started_at=_started_at(folder))
    reporter = _JobReporter(status, folder)
    try:
        train_config = TrainConfig.from_dict(payload["config"])
        result = train(
            train_config, reporter, reporter.should_stop, directory, payload.get("activate")
        )
    except Cancelled:
        status.state, status.message = "cancelled", "Cancelled; nothing was changed"
    except Exception as error:  # noqa: BLE001 - any failure must end as a recorded state.
        traceback.print_exc()
        status.state, status.error = "failed", f"{type(error).__name__}: {error}"
        status.message = f"Failed: {status.error}"
    else:
        status.state, status.run_id = "succeeded", result.run_id
        status.message = f"Finished: run {result.run_id}"
    write_status(status, directory)
    return 0 if status.state == "succeeded" else 1
