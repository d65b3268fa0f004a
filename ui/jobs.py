"""Background jobs (training, evaluation) as the pages watch them: progress, cancel, outcome."""

import time
from collections.abc import Callable

import pandas as pd
import streamlit as st

from core import worker


def job_monitor(
    kind: str,
    show_finished: Callable[[worker.JobStatus], None],
    prefix: str,
    on_done: Callable[[worker.JobStatus], None] | None = None,
    gone: Callable[[worker.JobStatus], bool] | None = None,
) -> None:
    """The latest background job of `kind`, refreshed every 2 s while it runs (only then).

    When a job seen running finishes, `on_done` runs and the page reruns in full (so that
    Start buttons are enabled again); a finished job is drawn by `show_finished`, unless it
    is out of date: it failed on input changed since (`input_changed`), or `gone` says what
    it made is gone (a deleted run).
    """
    first = worker.latest_job(kind=kind)
    running = first is not None and not first.finished

    @st.fragment(run_every=2 if running else None)
    def monitor() -> None:
        status = worker.latest_job(kind=kind)
        if status is None or (
            status.finished and not running and _out_of_date(status, prefix, gone)
        ):
            return
        st.subheader(f"{status.kind.capitalize()} {status.job_id}")
        if not status.finished:
            _show_running(status, prefix)
        elif running:
            if on_done is not None:
                on_done(status)
            st.rerun()
        else:
            show_finished(status)

    monitor()


def input_changed(prefix: str) -> None:
    """Note that the inputs of the `prefix` jobs changed, so that an earlier failure is out of
    date: the dataset picker's widgets call it when they change."""
    st.session_state[f"{prefix}_input_changed_at"] = time.time()


def _out_of_date(
    status: worker.JobStatus, prefix: str, gone: Callable[[worker.JobStatus], bool] | None
) -> bool:
    changed_at = st.session_state.get(f"{prefix}_input_changed_at", 0.0)
    failed_before = status.state == "failed" and status.started_at < changed_at
    return failed_before or (gone is not None and gone(status))


def _progress_text(status: worker.JobStatus) -> str:
    """What the job is doing, in plain words."""
    step = "run" if status.kind == worker.EVALUATION else "epoch"
    if status.fraction is not None:
        return f"{status.stage_name}: {step} {status.epoch} of {status.epochs}"
    if status.epochs:
        # A phase's last step is done; what follows until the next report has no progress.
        return f"{status.stage_name}: done, preparing the next step"
    if status.message and status.message.lower() not in (status.stage, status.stage_name.lower()):
        return f"{status.stage_name}: {status.message}"
    return status.stage_name


def _show_running(status: worker.JobStatus, prefix: str) -> None:
    from core.analysis import charts

    if status.fraction is None:
        st.status(_progress_text(status), state="running")
    else:
        st.progress(status.fraction, text=_progress_text(status))
    remaining = status.remaining_seconds
    st.caption(
        f"{status.elapsed_seconds:.0f} s since Start"
        + ("" if remaining is None else f"; about {remaining:.0f} s left in this phase")
    )
    if status.history:
        st.plotly_chart(charts.learning_curves_figure(pd.DataFrame(status.history)))
    if st.button(f"Cancel {status.kind}", key=f"{prefix}_cancel"):
        worker.cancel(status.job_id)
        st.info("Cancelling: the job stops after the current batch.")
