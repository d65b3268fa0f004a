# Image for a Hugging Face Space (Docker SDK); runs anywhere with `docker run -p 8501:8501 IMAGE`.
# See docs/deployment.md; `make container-check` builds and checks it with podman.
# The base is an argument only so that a machine that cannot pull python:3.11-slim can build
# on a stand-in with the same layout (scripts/container-check.sh makes one); Spaces and
# `docker build` use the default.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies are installed as root into the system site-packages, before the code is copied,
# so that a code change does not reinstall TensorFlow and the app user cannot modify them.
COPY requirements.txt requirements.lock /tmp/requirements/
RUN pip install --root-user-action=ignore \
        -r /tmp/requirements/requirements.txt -c /tmp/requirements/requirements.lock \
    && rm -rf /tmp/requirements

# Spaces run the container as uid 1000: the app and its home belong to that user.
RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user
WORKDIR /home/user/app
COPY --chown=user . /home/user/app

EXPOSE 8501
# curl is not in the slim image; Python is.
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"

# The entrypoint moves models, database, datasets and caches to /data when it is mounted.
ENTRYPOINT ["/bin/bash", "/home/user/app/scripts/docker-entrypoint.sh"]
# Spaces embed the app in a cross-site iframe: the XSRF cookie must be SameSite=None (sent over
# HTTPS by the Spaces proxy) for uploads to pass XSRF protection, which stays on. The page talks
# only to its own origin, so CORS protection stays on too. Nobody edits the code of a running
# deployment, so no file is watched.
CMD ["streamlit", "run", "Home.py", \
     "--server.port=8501", \
     "--server.address=0.0.0.0", \
     "--server.fileWatcherType=none", \
     "--server.enableXsrfProtection=true", \
     "--server.xsrfCookieSameSite=none", \
     "--server.enableCORS=true", \
     "--browser.gatherUsageStats=false"]
