"""DrFuse: EHR + chest X-ray phenotype prediction with missing modalities (Yao et al., AAAI 2024)."""

__version__ = "0.1.0"
