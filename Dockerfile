# The project's software in one image, for `container:` runs (`snakemake --sdm apptainer`) or to
# run the whole workflow inside it. Same pins as requirements.txt (a test keeps them in step).
#   docker build -t drfuse .
#   apptainer build drfuse.sif docker-daemon://drfuse:latest      # for clusters
# Nothing from MIMIC is ever copied in: data and results are mounted at run time.
FROM python:3.11-slim

RUN pip install --no-cache-dir \
    torch==2.14.1 \
    torchvision==0.29.1 \
    duckdb==2.0.1 \
    polars==2.1.0 \
    pyarrow==26.0.1 \
    numpy==2.4.6 \
    pandas==3.1.1 \
    pyyaml==6.0.4 \
    jsonschema==4.26.0 \
    pillow==13.0.0 \
    pydicom==3.0.2 \
    scikit-learn==1.9.1 \
    matplotlib==3.11.2 \
    tqdm==4.70.1 \
    snakemake==9.27.1 \
    snakemake-executor-plugin-slurm==2.8.0

# The workflow and the package; rules put this folder on PYTHONPATH, as they do outside.
WORKDIR /opt/drfuse
COPY . /opt/drfuse
ENV PYTHONPATH=/opt/drfuse
CMD ["snakemake", "--cores", "all"]
