# The service's images, from one recipe. The build argument MODELS picks the task types whose own
# requirements (factorize_app/tasks/<type>/requirements.txt) go into the image and whose model
# files are prepared at build (`python -m factorize_app.tasks.<type>.model`, into MODEL_DIR):
#   docker build .                            MODELS=all: every model; a worker for every queue,
#                                             or the single-container synchronous mode
#   docker build --build-arg MODELS= .        none: the web server, and the workers of types that
#                                             need only the service's requirements
#   docker build --build-arg MODELS=digits .  one model's worker image
# The layers that take time come first and change least: the service's requirements (shared by
# every image), then the models' requirements, then the source.
ARG PYTHON_IMAGE=python:3.11-slim

# The models' requirements files alone, at their paths: a change to a model's code leaves the
# dependency layers of the image cached.
FROM ${PYTHON_IMAGE} AS model-requirements
COPY factorize_app/tasks /tasks
WORKDIR /tasks
RUN mkdir /requirements \
    && find . -mindepth 2 -maxdepth 2 -name requirements.txt -exec cp --parents {} /requirements \;

FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Dependencies in their own layer: only a change to requirements.txt rebuilds it.
COPY requirements.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
    && pip install --no-compile -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/app app \
    && mkdir -p /data/files \
    && chown -R app:app /data

# "all", or task type names separated by spaces, each with a requirements.txt. One pip run for all
# of them, so that two models pinning different versions of one package fail the build.
ARG MODELS=all
COPY --from=model-requirements /requirements /tmp/model-requirements
WORKDIR /tmp/model-requirements
RUN if [ "$MODELS" = all ]; then MODELS="$(find . -mindepth 1 -maxdepth 1 -type d -printf '%f ')"; fi \
    && touch models.txt requirements.txt \
    && for model in $MODELS; do \
        [ -f "$model/requirements.txt" ] \
            || { echo "MODELS: no factorize_app/tasks/$model/requirements.txt" >&2; exit 1; }; \
        echo "$model" >>models.txt && echo "-r $model/requirements.txt" >>requirements.txt; \
    done \
    && pip install --no-compile -r requirements.txt \
    && mv models.txt /opt/venv/models.txt \
    && rm -rf /tmp/model-requirements

WORKDIR /app
# The whole source tree (packages with their data files), less .dockerignore.
COPY . .

# Static files are collected at build time; WhiteNoise serves them under gunicorn with DEBUG off.
# The models' files are made now, so that workers start warm, without training or downloading.
ENV DJANGO_SETTINGS_MODULE=project.settings \
    STATIC_COLLECTED=1 \
    DATABASE_URL=sqlite:////data/db.sqlite3 \
    MODEL_DIR=/app/models \
    FILES_DIR=/data/files \
    PORT=8080
RUN python manage.py collectstatic --noinput -v0 \
    && while read -r model; do python -m "factorize_app.tasks.$model.model" </dev/null; done </opt/venv/models.txt

USER 10001:10001
EXPOSE 8080
VOLUME ["/data"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=2)"]
CMD ["scripts/start-web.sh"]
