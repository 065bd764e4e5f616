"""Evaluation: exact vectorised bootstrap of PRAUC / AUROC, the paper's tables and figures."""
