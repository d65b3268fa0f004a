"""Training and evaluation in the background, in their own process, owned by core.

A page starts a job, polls its status and may cancel it; the job survives page changes and
browser reloads because it is a separate process that writes its state to files:
MODELS_DIR/.jobs/<job_id>/{config.json, status.json, log.txt, cancel}. One job of any kind
runs at a time, since both kinds want every core. A training job writes a run folder, an
evaluation job an evaluation record into each run folder it scores. Jobs never touch the
database: the app ingests the folders they write.
"""

import contextlib
import datetime
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.inputs import data
from core.progress import Cancelled, Progress
from core.storage import runs
from core.train.train_config import TrainConfig

JOBS_FOLDER = ".jobs"
# In the jobs folder; held (flock) while a job starts. See _job_slot.
SLOT_LOCK_FILE = "start.lock"
RUNNING = "running"
FINISHED_STATES = ("succeeded", "failed", "cancelled")
TRAINING = "training"
EVALUATION = "evaluation"
# What each stage is called on the page; unknown stages read as their own name.
STAGE_NAMES = {
    "starting": "Starting the background process",
    "weights": "Checking the backbone weights",
    "crossval": "Cross-validating by source",
    "data": "Checking and decoding the images",
    "features": "Computing backbone features",
    "head": "Training the head (backbone frozen)",
    "fine_tune": "Fine-tuning the backbone",
    "evaluate": "Scoring the validation and test splits",
    "done": "Saving the run",
    "scoring": "Scoring the images",
}


class TrainingBusyError(RuntimeError):
    """A job (training or evaluation) was asked for while another one is running."""


@dataclass(frozen=True)
class EvaluationRequest:
    """What an evaluation job scores: a dataset, and the runs to score it with."""

    data_dir: str
    csv: str | None
    sites: tuple[str, ...]
    run_ids: tuple[str, ...]
    tta: bool | None = None
    skip_unmatched: bool = False

    def validate(self, directory: Path | None = None) -> None:
        """ValueError (RunError for a run) before any process starts, naming what is wrong."""
        if not self.run_ids:
            raise ValueError("choose at least one run to evaluate")
        data.normalise_sites(self.sites)
        if not Path(self.data_dir).is_dir():
            raise ValueError(f"data folder not found: {self.data_dir}")
        for run_id in self.run_ids:
            runs.load_run(runs.models_dir(directory) / run_id)

    @classmethod
    def from_dict(cls, values: dict) -> "EvaluationRequest":
        return cls(
            **{**values, "sites": tuple(values["sites"]), "run_ids": tuple(values["run_ids"])}
        )


@dataclass
class JobStatus:
    """A job's state. An evaluation job counts runs in `epoch`/`epochs` and images in
    `batch`/`batches`, so that `fraction` and `remaining_seconds` hold for both kinds."""

    job_id: str
    kind: str = TRAINING
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
    evaluation_ids: list[str] = field(default_factory=list)
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
        status.state, status.error = "failed", f"the {status.kind} process ended unexpectedly"
        status.message = f"Failed: {status.error}"
        write_status(status, directory)
    return status


def write_status(status: JobStatus, directory: Path | None = None) -> None:
    status.updated_at = time.time()
    runs.write_json_atomic(jobs_dir(directory) / status.job_id / "status.json", asdict(status))


def _process_alive(pid: int | None) -> bool:
    if pid is None or not runs.process_alive(pid):
        return False
    # A finished child that nobody waited for is a zombie: reap it so it counts as dead.
    try:
        finished_pid, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return finished_pid == 0


def latest_job(directory: Path | None = None, kind: str | None = None) -> JobStatus | None:
    """The newest job, or the newest of one kind (TRAINING or EVALUATION)."""
    folder = jobs_dir(directory)
    if not folder.is_dir():
        return None
    job_ids = sorted(path.name for path in folder.iterdir() if (path / "status.json").is_file())
    for job_id in reversed(job_ids):
        if kind is None or _job_kind(folder / job_id) == kind:
            return read_status(job_id, directory)
    return None


def _job_kind(folder: Path) -> str | None:
    try:
        return json.loads((folder / "status.json").read_text()).get("kind", TRAINING)
    except (OSError, ValueError, AttributeError):
        return None


def start_training(
    train_config: TrainConfig, directory: Path | None = None, activate: bool = False
) -> str:
    """Start a training process for `train_config`; returns the job id."""
    train_config.validate()
    payload = {"config": asdict(train_config), "activate": activate}
    return _start_job(TRAINING, payload, directory)


def start_evaluation(request: EvaluationRequest, directory: Path | None = None) -> str:
    """Start an evaluation process that scores and stores each run in turn; the job id."""
    request.validate(directory)
    return _start_job(EVALUATION, {"request": asdict(request)}, directory)


@contextlib.contextmanager
def _job_slot(directory: Path | None):
    """Held while a start checks for a running job and starts its own, so that two starts at
    the same instant, in one process or two, never both find the slot free.

    An flock rather than a lock file: the system drops it when its holder dies, so a killed
    app never leaves the slot taken.
    """
    folder = jobs_dir(directory)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / SLOT_LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # Closing the file releases the lock.


def _start_job(kind: str, payload: dict, directory: Path | None) -> str:
    with _job_slot(directory):
        current = latest_job(directory)
        if current is not None and not current.finished:
            raise TrainingBusyError(
                f"{current.kind} {current.job_id} is still running; wait for it or cancel it"
            )
        folder = _new_job_folder(directory)
        (folder / "config.json").write_text(json.dumps({"kind": kind, **payload}, indent=2))
        pid = _launch(folder, directory)
        write_status(JobStatus(job_id=folder.name, kind=kind, pid=pid), directory)
    return folder.name


def _new_job_folder(directory: Path | None) -> Path:
    """A new job folder named by its start time: sorted names are start order, and the
    random suffix keeps two starts in the same microsecond apart."""
    started = datetime.datetime.now().strftime("%Y%m%d-%H%M%S.%f")
    folder = jobs_dir(directory) / f"{started}-{secrets.token_hex(2)}"
    folder.mkdir(parents=True)
    return folder


def _launch(folder: Path, directory: Path | None) -> int:
    """Start the worker process of the job in `folder`; its process id."""
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
    return process.pid


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
            raise TimeoutError(f"job {job_id} still running after {timeout} s")
        time.sleep(0.5)


class _JobReporter:
    """Turns a job's progress into status.json updates and honours cancellation."""

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
        if self.should_stop():
            raise Cancelled(f"{self.status.kind} was cancelled")
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


def _train(payload: dict, reporter: _JobReporter, directory: Path) -> str:
    # Training and evaluation load TensorFlow: only the job's own process imports them, never
    # the app that starts and polls it.
    from core.train.training import train

    train_config = TrainConfig.from_dict(payload["config"])
    result = train(
        train_config, reporter, reporter.should_stop, directory, bool(payload.get("activate"))
    )
    reporter.status.run_id = result.run_id
    return f"Finished: run {result.run_id}"


def _evaluate(payload: dict, reporter: _JobReporter, directory: Path) -> str:
    # Loads TensorFlow: see `_train`.
    from core.serving import evaluation

    request = EvaluationRequest.from_dict(payload["request"])
    reporter(Progress("data", "Checking the images"))
    dataset, skipped = evaluation.load_evaluation_dataset(
        request.data_dir, request.csv, request.sites, request.skip_unmatched
    )
    for number, run_id in enumerate(request.run_ids, start=1):
        run = runs.load_run(runs.models_dir(directory) / run_id)
        on_batch = _batch_reporter(reporter, run_id, number, len(request.run_ids))
        on_batch(0, len(dataset.frame))
        record, predictions = evaluation.evaluate_run(
            run, dataset, request.tta, on_batch=on_batch, skipped=skipped
        )
        evaluation.save_evaluation(run, record, predictions)
        reporter.status.evaluation_ids.append(record["evaluation_id"])
    return f"Finished: {len(request.run_ids)} of {len(request.run_ids)} runs evaluated and saved"


def _batch_reporter(reporter: _JobReporter, run_id: str, number: int, total_runs: int):
    def report(done: int, total: int) -> None:
        message = f"Run {run_id}: {done} of {total} images scored"
        reporter(Progress("scoring", message, number, total_runs, done, total))

    return report


_JOB_BODIES = {TRAINING: _train, EVALUATION: _evaluate}


def _cancelled_message(status: JobStatus) -> str:
    if status.kind == TRAINING or not status.evaluation_ids:
        return "Cancelled; nothing was changed"
    return f"Cancelled; the {len(status.evaluation_ids)} evaluations finished before are kept"


def _failure_text(error: Exception) -> str:
    """A ValueError is bad input, said in words for the user; anything else is a bug, named."""
    if isinstance(error, ValueError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def run_job(folder: Path) -> int:
    """The body of the process started by `start_training` or `start_evaluation`."""
    folder = Path(folder)
    directory = folder.parent.parent
    payload = json.loads((folder / "config.json").read_text())
    kind = payload.get("kind", TRAINING)
    # One clock from the click: keep the start time that _start_job recorded.
    status = JobStatus(
        job_id=folder.name, kind=kind, pid=os.getpid(), started_at=_started_at(folder)
    )
    reporter = _JobReporter(status, folder)
    try:
        message = _JOB_BODIES[kind](payload, reporter, directory)
    except Cancelled:
        status.state, status.message = "cancelled", _cancelled_message(status)
    except Exception as error:  # noqa: BLE001 - any failure must end as a recorded state.
        traceback.print_exc()
        status.state, status.error = "failed", _failure_text(error)
        status.message = f"Failed: {status.error}"
    else:
        status.state, status.message = "succeeded", message
    write_status(status, directory)
    return 0 if status.state == "succeeded" else 1
