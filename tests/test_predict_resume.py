"""`python -m core predict` at archive scale: rows as they come, progress, and --resume."""

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

from bench.tiny import make_tiny_run
from core import config
from core.__main__ import main
from core.commands import Progress, format_duration, write_predictions
from core.serving.inference import find_images
from core.storage.prediction_csv import PREDICT_COLUMNS

SAMPLE_IMAGES = config.SAMPLE_DIR / "images"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("models")).folder


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Six sample images in two nested folders and one file that is not an image."""
    root = tmp_path_factory.mktemp("archive")
    for index, source in enumerate(sorted(SAMPLE_IMAGES.iterdir())[:6]):
        folder = root / f"part{index % 2}"
        folder.mkdir(exist_ok=True)
        (folder / source.name).write_bytes(source.read_bytes())
    (root / "part1" / "broken.jpg").write_bytes(b"not an image")
    return root


@pytest.fixture(scope="module")
def full_csv(tiny_run, archive, tmp_path_factory) -> bytes:
    """The CSV of one uninterrupted run over the archive."""
    out = tmp_path_factory.mktemp("full") / "out.csv"
    assert predict(tiny_run, archive, out) == 0
    return out.read_bytes()


def predict(run: Path, archive: Path, out: Path, *options: str) -> int:
    return main(
        ["predict", "--no-tta", "--model", str(run), "--out", str(out), *options, str(archive)]
    )


def lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def with_probability(line: bytes, probability: str) -> bytes:
    row = next(csv.reader([line.decode()]))
    row[1] = probability
    text = io.StringIO()
    csv.writer(text).writerow(row)
    return text.getvalue().encode()


def test_a_full_run_writes_one_row_per_file_in_walk_order(full_csv, archive):
    rows = list(csv.reader(io.StringIO(full_csv.decode())))
    assert tuple(rows[0]) == PREDICT_COLUMNS
    assert [row[0] for row in rows[1:]] == find_images([str(archive)])
    assert len(rows) == 1 + 7


def test_progress_is_on_standard_error_not_in_the_csv(tiny_run, archive, tmp_path, capsys):
    assert predict(tiny_run, archive, tmp_path / "out.csv") == 0
    captured = capsys.readouterr()
    assert "predicting 7 images" in captured.err
    assert "predicted 7 of 7 (100.0%)" in captured.err and "images/s" in captured.err
    assert captured.out == ""


def test_resume_after_a_kill_keeps_done_rows_and_appends_the_rest(
    tiny_run, archive, full_csv, tmp_path, capsys
):
    out = tmp_path / "out.csv"
    header, first, second, *rest = lines(full_csv)
    # A marker in a finished row shows that resuming does not predict it again.
    marked = with_probability(first, "0.123456")
    out.write_bytes(header + marked + second + rest[0][:20])
    assert predict(tiny_run, archive, out, "--resume") == 0
    assert out.read_bytes() == header + marked + second + b"".join(rest)
    assert "predicting 5 images (2 already in" in capsys.readouterr().err


def test_resume_of_a_finished_csv_changes_nothing(tiny_run, archive, full_csv, tmp_path, capsys):
    out = tmp_path / "out.csv"
    out.write_bytes(full_csv)
    assert predict(tiny_run, archive, out, "--resume") == 0
    assert out.read_bytes() == full_csv
    assert "predicting 0 images (7 already in" in capsys.readouterr().err


@pytest.mark.parametrize("start", [b"", b"file,proba"])
def test_resume_without_a_complete_header_starts_over(
    tiny_run, archive, full_csv, tmp_path, start
):
    out = tmp_path / "out.csv"
    out.write_bytes(start)
    assert predict(tiny_run, archive, out, "--resume") == 0
    assert out.read_bytes() == full_csv


def test_resume_of_a_missing_file_writes_it(tiny_run, archive, full_csv, tmp_path):
    out = tmp_path / "new.csv"
    assert predict(tiny_run, archive, out, "--resume") == 0
    assert out.read_bytes() == full_csv


def test_resume_needs_an_output_file(tiny_run, archive, capsys):
    code = main(["predict", "--model", str(tiny_run), "--resume", str(archive)])
    assert code == 2
    assert "--resume needs --out" in capsys.readouterr().err


def refused(run: Path, archive: Path, out: Path, content: bytes, capsys) -> str:
    """Resume onto `content`: the error message, once the file is shown untouched."""
    out.write_bytes(content)
    assert predict(run, archive, out, "--resume") == 2
    assert out.read_bytes() == content
    return capsys.readouterr().err


def test_resume_refuses_other_columns(tiny_run, archive, full_csv, tmp_path, capsys):
    content = b"file,probability\r\n" + b"".join(lines(full_csv)[1:])
    message = refused(tiny_run, archive, tmp_path / "out.csv", content, capsys)
    assert "does not have the columns" in message


def test_resume_refuses_another_models_rows(tiny_run, archive, full_csv, tmp_path, capsys):
    header, first, *_ = lines(full_csv)
    other = first.replace(b",tiny-untrained,", b",20260101-000000-other,")
    message = refused(tiny_run, archive, tmp_path / "out.csv", header + other, capsys)
    assert "holds predictions of model 20260101-000000-other, not tiny-untrained" in message


def test_resume_refuses_a_damaged_row(tiny_run, archive, full_csv, tmp_path, capsys):
    header, first, *_ = lines(full_csv)
    message = refused(tiny_run, archive, tmp_path / "out.csv", header + b"a,b\r\n" + first, capsys)
    assert "line 2: 2 fields" in message


def test_resume_refuses_when_no_row_names_these_files(
    tiny_run, archive, full_csv, tmp_path, capsys
):
    header, first, *_ = lines(full_csv)
    elsewhere = first.replace(str(archive).encode(), b"/elsewhere")
    message = refused(tiny_run, archive, tmp_path / "out.csv", header + elsewhere, capsys)
    assert "none of them for these 7 files" in message


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# Another predict writing the file: takes its lock, says so, and holds it until stdin closes.
HOLD_OUTPUT = """
import sys
from core.storage.prediction_csv import output_lock
with output_lock(sys.argv[1]):
    print("ready", flush=True)
    sys.stdin.read()
"""


def test_a_second_writer_of_one_output_file_is_refused(
    tiny_run, archive, full_csv, tmp_path, capsys
):
    out = tmp_path / "out.csv"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OUTPUT, str(out)],
        cwd=config.REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert predict(tiny_run, archive, out) == 1
        assert predict(tiny_run, archive, out, "--resume") == 1
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    error = capsys.readouterr().err
    assert f"{out} is being written by another predict (pid {holder.pid})" in error
    assert not out.exists()
    # Once the other one has finished, the file is this run's, and no lock file is left.
    assert predict(tiny_run, archive, out) == 0
    assert out.read_bytes() == full_csv and not Path(f"{out}.lock").exists()


def test_an_output_in_a_missing_folder_is_refused_before_predicting(tiny_run, archive, capsys):
    out = archive / "no" / "such" / "out.csv"
    assert predict(tiny_run, archive, out) == 2
    assert "does not exist" in capsys.readouterr().err


def test_progress_in_a_log_writes_a_line_every_ten_seconds():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(1000, stream, terminal=False, clock=clock)
    for _ in range(100):
        clock.now += 0.25
        progress.advance()
    progress.finish()
    written = stream.getvalue().splitlines()
    # 25 seconds at 4 images/s: lines at 10 and 20 seconds, then the final count.
    assert written == [
        "predicted 40 of 1,000 (4.0%), 4.0 images/s, 4m00s left",
        "predicted 80 of 1,000 (8.0%), 4.0 images/s, 3m50s left",
        "predicted 100 of 1,000 (10.0%), 4.0 images/s, 3m45s left",
    ]


def test_progress_on_a_terminal_redraws_one_line():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(3, stream, terminal=True, clock=clock)
    for _ in range(3):
        clock.now += 1.0
        progress.advance()
    progress.finish()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("in 3s\n")
    assert text.count("\r\x1b[K") == 4


def test_durations_read_as_hours_minutes_seconds():
    assert [format_duration(s) for s in (42, 938, 14520)] == ["42s", "15m38s", "4h02m"]


class FakePrediction:
    def __init__(self, file: str):
        self.file, self.probability, self.label, self.threshold = file, 0.25, "benign", 0.5
        self.model, self.error, self.ood_score, self.ood_flag = "run", "", None, None
        self.threshold_source, self.diagnoses = "card", ()


def test_rows_reach_the_file_while_later_images_are_still_predicted(tmp_path):
    out = tmp_path / "out.csv"
    seen_on_disk = []

    def predictions():
        for index in range(3):
            seen_on_disk.append(len(out.read_text().splitlines()))
            yield FakePrediction(f"{index}.jpg")

    with open(out, "w", newline="") as handle:
        write_predictions(predictions(), 3, handle, to_stdout=False)
    assert seen_on_disk == [0, 1, 2]


def test_find_images_walks_folders_in_path_order_and_keeps_only_images(tmp_path):
    for name in ("b.jpg", "z.PNG", "c/d.jpeg", "notes.txt", "c/e/f.tif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "link").symlink_to(tmp_path / "c")
    found = [Path(path).relative_to(tmp_path).as_posix() for path in find_images([str(tmp_path)])]
    assert found == ["b.jpg", "c/d.jpeg", "c/e/f.tif", "z.PNG"]
