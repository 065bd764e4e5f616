# The project's software in one image, for `container:` runs (`snakemake --sdm apptainer`) or to
# run the whole workflow inside it: the pins of requirements.txt (envs/container-install.sh; its
# test extras left out) and this checkout as the `drfuse` command. drfuse.def builds the same
# image with Apptainer, without Docker.
#   docker build -t drfuse .                                     # PyTorch's CUDA 13.0 build (PyPI)
#   docker build -t drfuse-cpu --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu .
# The CUDA build runs on an NVIDIA driver >= 580 (CUDA 13.x) and a GPU of compute capability 7.5 or
# newer (Turing on). Nothing from MIMIC is ever copied in: data and results are mounted at run time.
FROM python:3.11-slim

ARG TORCH_INDEX=https://pypi.org/simple
WORKDIR /opt/drfuse
COPY requirements.txt /opt/drfuse/requirements.txt
COPY envs/container-install.sh /opt/drfuse/envs/container-install.sh
RUN sh /opt/drfuse/envs/container-install.sh "$TORCH_INDEX"

# The workflow and the package (rules put this folder on PYTHONPATH, as they do outside).
COPY . /opt/drfuse
RUN pip install --no-cache-dir --no-deps /opt/drfuse && rm -rf /opt/drfuse/build /opt/drfuse/*.egg-info
CMD ["snakemake", "--cores", "all"]
