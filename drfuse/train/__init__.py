"""Training and prediction shared by every model.

- `data`: one split of the cohort as arrays (EHR, lengths, labels, usable-CXR images).
- `augment`: batched image augmentation on tensors (GPU or CPU).
- `engine`: the training loop (early stopping, resume, device placement, mixed precision).
- `checkpoint`: atomic checkpoint files and RNG states.
- `metrics`: macro PRAUC / AUROC for early stopping.
- `gpu_lease`: one GPU per concurrent job on a multi-GPU workstation.
- `run`: `train` and `predict`, the functions the CLI calls.
"""
