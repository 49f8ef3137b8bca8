# The scarfx pipeline image: every Kubeflow pod (and the Beam workers, if you run
# them in it) runs the pipeline's components from this image.
#
# It installs exactly what scripts/bootstrap installs, in the same order and from
# the same requirements.lock, so a pod runs the library versions the tests ran:
#   1. uv (pip's resolver backtracks for many minutes on this stack);
#   2. requirements.lock into a venv;
#   3. tfx and ml-pipelines-sdk 1.16.0 with --no-deps (they declare Requires-Python
#      <3.11 although all they need is in the lock; see scripts/bootstrap);
#   4. scarfx itself, so `scarfx.models.trainer.run_fn` and
#      `scarfx.models.preprocessing.preprocessing_fn` import by dotted path.
# tests/test_dockerfile.py keeps these pins in step with scripts/bootstrap.
#
#   docker build -t scarfx:0.1.0 .
#   scarfx kubeflow compile --image REGISTRY/scarfx:0.1.0 --pipeline-root gs://BUCKET/scarfx

# Debian 12, as on the development machines: tfx-bsl/tfdv 1.16 wheels are built
# for its glibc.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_NO_CACHE=1 \
    UV_LINK_MODE=copy \
    VIRTUAL_ENV=/opt/scarfx/.venv
# `python` must be the venv's: KFP starts each component as
# `python -m tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor`.
ENV PATH=/opt/scarfx/.venv/bin:$PATH

RUN pip install --no-cache-dir uv==0.13.9

WORKDIR /opt/scarfx

# Dependencies first, so a code change does not reinstall TensorFlow.
COPY requirements.lock ./
RUN uv venv --python /usr/local/bin/python3.11 $VIRTUAL_ENV \
 && uv pip install --python $VIRTUAL_ENV/bin/python -r requirements.lock \
 && uv pip install --python $VIRTUAL_ENV/bin/python --no-deps tfx==1.16.0 ml-pipelines-sdk==1.16.0

# The sources go to src/, not the working directory: there, their scarfx/ (which holds
# only __init__.py; setup.py maps the other folders into the package) would shadow the
# installed package for every `python -m ...` started in it, KFP's executor included.
# They stay for Beam's --setup_file=/opt/scarfx/src/setup.py (docs/ORCHESTRATION.md).
WORKDIR /opt/scarfx/src
COPY setup.py ./
COPY scarfx ./scarfx
COPY pipeline ./pipeline
COPY components ./components
COPY models ./models
COPY serving ./serving
COPY kubeflow ./kubeflow
COPY benchmarks ./benchmarks
# Not editable (unlike bootstrap's -e .): the image is immutable, site-packages is enough.
RUN uv pip install --python $VIRTUAL_ENV/bin/python --no-deps .
WORKDIR /opt/scarfx
RUN python -c "import scarfx.models.trainer, scarfx.models.preprocessing, scarfx.components.anomalies_gate, tfx.version; print('tfx', tfx.version.__version__)"

# Runs as root, like TFX's own images: the Pusher writes into a mounted
# PersistentVolumeClaim, whose ownership the image cannot know.
CMD ["scarfx", "--help"]
