#!/usr/bin/env bash
# Build the Hugging Face Space image with podman and check it the way a Space runs it: as uid
# 1000, once without and once with persistent storage mounted at /data. Each run must answer on
# Streamlit's health endpoint (from the host and through the image's HEALTHCHECK) and predict a
# bundled sample image inside the running container; the image's size and the app's memory,
# idle and after predicting, are printed at the end. `make container-check` runs it; CI does not
# (it needs podman, root and a few GB of downloads).
#
# The build context is the committed tree (`git archive HEAD`), as a Space receives it, so local
# runs, datasets and uncommitted edits stay out of the image.
#
# Settings, from the environment:
#   BASE_IMAGE      base image for the build. Unset: a stand-in for python:3.11-slim is made with
#                   mmdebstrap from Debian bookworm (Python 3.11) and imported, for machines that
#                   cannot pull from a container registry (made once, then reused: `podman rmi
#                   localhost/dermoscopy-base:bookworm-python3.11` for a fresh one).
#                   BASE_IMAGE=python:3.11-slim uses the real one.
#   PODMAN_RUNTIME  OCI runtime for podman (e.g. runc where crun fails on the kernel's cgroups).
#   PORT            host port the app is published on (default 8599).
#   PROBE_PYTHON    a Python with playwright (requirements-dev.txt) to predict through the app
#                   in Chromium (default .venv/bin/python); without it, and without Chromium,
#                   only the command-line prediction inside the container is checked.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-dermoscopy-classifier:check}"
PORT="${PORT:-8599}"
PROBE_PYTHON="${PROBE_PYTHON:-.venv/bin/python}"
SAMPLE_IMAGES=(data/sample/images/ISIC_0024483.jpg data/sample/images/ISIC_0024537.jpg
    data/sample/images/ISIC_0024667.jpg)
STANDIN_BASE="localhost/dermoscopy-base:bookworm-python3.11"
HEALTH_SECONDS=300

podman_options=()
[[ -n "${PODMAN_RUNTIME:-}" ]] && podman_options+=(--runtime "$PODMAN_RUNTIME")
# podman asks for 1048576 open files by default, more than the hard limit of some hosts, where
# the runtime then refuses to start the container; these limits are plenty for the app.
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
# pip inside the build and the container trust the host's certificate authorities, so a host
# that reaches PyPI through a TLS-inspecting proxy can build too.
certificates=()
[[ -d /etc/ssl/certs ]] && certificates=(-v /etc/ssl/certs:/etc/ssl/certs:ro)

work="$(mktemp -d)"
containers=()
cleanup() {
    for name in "${containers[@]}"; do
        podman "${podman_options[@]}" rm -f "$name" >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }
fail() {
    printf 'container-check: FAILED: %s\n' "$*" >&2
    exit 1
}
need() { command -v "$1" >/dev/null 2>&1 || fail "needs $1 ($2)"; }
need podman "apt-get install podman"
need git "the build context is the committed tree"
need curl "apt-get install curl"

make_standin_base() {
    need mmdebstrap "apt-get install mmdebstrap"
    say "Stand-in base: Debian bookworm with Python 3.11 (mmdebstrap)"
    # python:3.11-slim has python and pip on PATH and lets root pip install into the image's
    # Python; Debian's own Python refuses that (PEP 668), so a root-owned virtual environment
    # first on PATH plays that part.
    mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook='chroot "$1" python3 -m venv /opt/python' \
        bookworm "$work/base.tar"
    podman "${podman_options[@]}" import \
        --change 'ENV=PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD=["python3"]' "$work/base.tar" "$STANDIN_BASE" >/dev/null
    rm -f "$work/base.tar"
    BASE_IMAGE="$STANDIN_BASE"
}

if [[ -z "${BASE_IMAGE:-}" ]]; then
    if podman "${podman_options[@]}" image exists "$STANDIN_BASE"; then
        BASE_IMAGE="$STANDIN_BASE"
    else
        make_standin_base
    fi
fi

say "Build $IMAGE on $BASE_IMAGE from $(git rev-parse --short HEAD)"
mkdir "$work/context"
git archive HEAD | tar -x -C "$work/context"
build_started=$SECONDS
# Docker format keeps the HEALTHCHECK, which the OCI image format has no field for.
podman "${podman_options[@]}" build --format docker "${limits[@]}" "${certificates[@]}" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$IMAGE" "$work/context"
build_seconds=$((SECONDS - build_started))
image_mib() {
    local bytes
    bytes="$(podman "${podman_options[@]}" image inspect --format '{{.Size}}' "$1")"
    echo $((bytes / 1024 / 1024))
}

# VmRSS of the container's main process (the entrypoint execs Streamlit), in MiB.
app_rss_mib() {
    local pid
    pid="$(podman "${podman_options[@]}" inspect --format '{{.State.Pid}}' "$1")"
    awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status"
}
# The container's memory charge as podman reports it (page cache left out), without its limit.
container_memory() {
    local usage
    usage="$(podman "${podman_options[@]}" stats --no-stream --format '{{.MemUsage}}' "$1")"
    echo "${usage%% /*}"
}

wait_until_healthy() {
    local deadline=$((SECONDS + HEALTH_SECONDS))
    until [[ "$(curl -fsS "http://127.0.0.1:$PORT/_stcore/health" 2>/dev/null)" == ok ]]; do
        if ((SECONDS > deadline)); then
            podman "${podman_options[@]}" logs "$1" >&2 || true
            fail "$1 did not answer on /_stcore/health in $HEALTH_SECONDS s"
        fi
        [[ "$(podman "${podman_options[@]}" inspect --format '{{.State.Running}}' "$1")" == true ]] || {
            podman "${podman_options[@]}" logs "$1" >&2 || true
            fail "$1 exited before answering"
        }
        sleep 2
    done
}

# Runs the command-line prediction in the container; prints "seconds peak_rss_mib".
predict_in_container() {
    podman "${podman_options[@]}" exec "$1" python -c '
import resource, subprocess, sys, time
started = time.monotonic()
result = subprocess.run([sys.executable, "-m", "core", "predict", *sys.argv[1:]],
                        capture_output=True, text=True)
sys.stderr.write(result.stdout)
if result.returncode:
    sys.exit(result.stderr)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{time.monotonic() - started:.1f} {peak:.0f}")
' "${SAMPLE_IMAGES[0]}"
}

can_drive_browser() {
    "$PROBE_PYTHON" -c "import playwright" 2>/dev/null && command -v chromium >/dev/null
}

# check_run LABEL CHECK [podman run options]: start the image, check health and predictions,
# read the memory figures, run the CHECK function on the container, then remove it.
report=()
check_run() {
    local label="$1" check="$2" name="dermoscopy-check-$1"
    shift 2
    say "Run $name as uid 1000 ($label)"
    containers+=("$name")
    local started=$SECONDS
    # Without systemd podman logs that it cannot time the image's HEALTHCHECK; it is run by hand
    # below.
    podman "${podman_options[@]}" run -d --name "$name" --user 1000:1000 "${limits[@]}" \
        -p "127.0.0.1:$PORT:8501" "$@" "$IMAGE" >/dev/null
    wait_until_healthy "$name"
    local start_seconds=$((SECONDS - started))
    [[ "$(podman "${podman_options[@]}" exec "$name" id -u)" == 1000 ]] \
        || fail "$name does not run as uid 1000"
    podman "${podman_options[@]}" healthcheck run "$name" \
        || fail "the image's HEALTHCHECK fails in $name"
    echo "health: ok after $start_seconds s (from the host and through the HEALTHCHECK)"
    # Let start-up settle before reading the idle figures.
    sleep 20
    local idle_rss idle_container
    idle_rss="$(app_rss_mib "$name")"
    idle_container="$(container_memory "$name")"

    local prediction
    prediction="$(predict_in_container "$name")" || fail "python -m core predict failed in $name"
    echo "python -m core predict: ${prediction% *} s, peak RSS ${prediction#* } MiB"

    local through_app="not driven (needs playwright in PROBE_PYTHON and Chromium)"
    if can_drive_browser; then
        local seconds
        seconds="$("$PROBE_PYTHON" scripts/predict_in_browser.py "http://127.0.0.1:$PORT" \
            "${SAMPLE_IMAGES[@]}")" || fail "the prediction through the app failed in $name"
        through_app="$seconds s from upload to probability, then app RSS"
        through_app+=" $(app_rss_mib "$name") MiB"
        through_app+=" (container $(container_memory "$name"))"
        echo "through the app: $through_app"
    fi
    "$check" "$name"
    report+=("$label: healthy after $start_seconds s; idle app RSS $idle_rss MiB (container \
$idle_container); CLI predict ${prediction% *} s, its peak RSS ${prediction#* } MiB; through the \
app: $through_app")
    podman "${podman_options[@]}" rm -f "$name" >/dev/null
}

# Without /data the entrypoint warns that state is lost on restart.
without_storage() {
    # Read whole: `grep -q` would stop at the match and podman, cut off, fail the pipeline.
    podman "${podman_options[@]}" logs "$1" 2>&1 | grep "lost when it restarts" >/dev/null \
        || fail "$1: the entrypoint did not warn about missing storage"
    echo "no /data: the entrypoint warned that state is lost on restart"
}
check_run without-data without_storage

# With /data the entrypoint seeds it with the default model and the sample; predictions made
# through the app land in its database there.
state="$work/state"
mkdir "$state"
chown 1000:1000 "$state"
with_storage() {
    [[ -f "$state/models/active.json" ]] || fail "$1: /data/models was not seeded"
    [[ -f "$state/datasets/sample/metadata.csv" ]] || fail "$1: the sample was not copied"
    if can_drive_browser; then
        [[ -f "$state/app.duckdb" ]] || fail "$1: the history database is not in /data"
    fi
    echo "/data: seeded with the default model and the sample, owned by uid" \
        "$(stat -c %u "$state/models")"
}
check_run with-data with_storage -v "$state:/data"

say "Figures"
echo "base image: $BASE_IMAGE"
echo "build: $build_seconds s"
echo "image size: $(image_mib "$IMAGE") MiB, of which the base $(image_mib "$BASE_IMAGE") MiB"
printf '%s\n' "${report[@]}"
