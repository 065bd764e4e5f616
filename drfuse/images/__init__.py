"""Chest X-ray images: `decode` reads one file (JPEG, PNG, DICOM); `cache` builds and reads the
uint8 cache of the cohort's images (see `drfuse.images.cache` for the reader used by training)."""
