# satclip on a CUDA PyTorch runtime. Code only: mount data, checkpoints and pretrained weights.
#   docker build -t satclip .
#   docker run --gpus all --ipc=host --user "$(id -u):$(id -g)" -v /data/shards:/shards:ro -v "$PWD/runs:/runs" \
#     satclip fit --config /opt/satclip/configs/satclip-resnet18-l10.yaml --trainer.default_root_dir /runs/r18 \
#     --data.train_urls /shards/train --data.val_urls /shards/val
# torch and torchvision come from the base image; pick a tag whose CUDA suits the host driver.
ARG BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1

COPY pyproject.toml README.md constraints.txt /opt/satclip/
COPY satclip /opt/satclip/satclip
COPY configs /opt/satclip/configs
COPY scripts /opt/satclip/scripts

# The tested pins of constraints.txt (the test suite's versions), less torch and torchvision, which
# stay those of the base image.
RUN grep -vE '^(torch|torchvision)==' /opt/satclip/constraints.txt > /tmp/constraints.txt \
    && pip install --no-cache-dir -c /tmp/constraints.txt "/opt/satclip[train,wandb]" \
    && rm /tmp/constraints.txt \
    && groupadd --gid 10001 satclip && useradd --create-home --uid 10001 --gid 10001 satclip

USER 10001:10001
WORKDIR /home/satclip
ENTRYPOINT ["satclip"]
CMD ["--help"]
