# satclip on a CUDA PyTorch runtime. Code only: mount data, checkpoints and pretrained weights.
#   docker build -t satclip .
#   docker run --gpus all --ipc=host --user "$(id -u):$(id -g)" -v /data/shards:/shards:ro -v "$PWD/runs:/runs" \
#     satclip fit --config /opt/satclip/configs/satclip-resnet18-l10.yaml --trainer.default_root_dir /runs/r18 \
#     --data.train_urls /shards/train --data.val_urls /shards/val
# torch and torchvision come from the base image; pick a tag whose CUDA suits the host driver.
ARG BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1

COPY pyproject.toml README.md /opt/satclip/
COPY satclip /opt/satclip/satclip
COPY configs /opt/satclip/configs
COPY scripts /opt/satclip/scripts

# The versions the test suite ran with; torch/torchvision stay those of the base image.
RUN pip install --no-cache-dir /opt/satclip \
        lightning==2.6.6 timm==1.0.31 "jsonargparse[signatures]==4.53.0" rasterio==1.4.4 \
        webdataset==1.0.2 blosc==1.11.4 wandb==0.31.0 numpy==2.4.6 safetensors==0.8.0 tqdm==4.70.1 \
        huggingface_hub==2.4.0 tensorboard==2.21.0 pyarrow==26.0.1 sphericart==2.0.4 \
    && groupadd --gid 10001 satclip && useradd --create-home --uid 10001 --gid 10001 satclip

USER 10001:10001
WORKDIR /home/satclip
ENTRYPOINT ["satclip"]
CMD ["--help"]
