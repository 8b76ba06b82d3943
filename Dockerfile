# polymodal serve in a container: docker build -t polymodal-serve .
# docker run -p 8000:8000 -v "$PWD/runs/x/best:/model:ro" polymodal-serve [--index /index ...]
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# The CPU build of PyTorch first, so that installing polymodal does not pull a CUDA one.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip install ".[serve,index,onnx]"

RUN useradd --create-home --uid 10001 polymodal
USER polymodal

EXPOSE 8000
HEALTHCHECK --interval=15s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz')"
# Options given to `docker run` are appended (--index /index, --api-key ..., --workers 2).
ENTRYPOINT ["polymodal", "serve", "/model", "--host", "0.0.0.0"]
