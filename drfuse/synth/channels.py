"""Modal inconsistency (`synth.modal_inconsistency`): for the chosen labels, each positive admission
shows its label's planted signal in ONE modality, drawn per admission.

DrFuse's second claim is that the same disease shows in the chest X-ray for one patient and in the
time series for another, so the weight of each modality must be chosen per patient. A label the
generator can show in both modalities (answer-key group `both`: a label effect on a model channel
and an image sign) can be made to behave so: each positive admission draws its channel, `cxr` or
`ehr` with equal chance, and the other modality is generated as if the label were absent (the EHR
side's label effects, or the image sign's higher rate). The admission's diagnoses, acuity and true
labels are unchanged. With no label chosen, nothing is drawn and the data are byte-identical.
"""

from __future__ import annotations

import numpy as np

from drfuse.errors import UserError
from drfuse.phenotypes import PHENOTYPES

NONE, EHR, CXR = 0, 1, 2
NAMES = {NONE: "none", EHR: "ehr", CXR: "cxr"}
CXR_SHARE = 0.5  # chance that a positive admission's signal shows in the image rather than the series


def eligible_labels() -> list[str]:
    """Labels with a planted signal in both modalities (answer-key group `both`)."""
    from drfuse.synth.answer_key import cxr_signs, ehr_channels

    ehr, cxr = ehr_channels(), cxr_signs()
    return [label for label in PHENOTYPES if ehr[label] and cxr[label]]


def check_labels(labels: list[str]) -> tuple[str, ...]:
    """The setting's labels (distinct strings: the schema checks that), each a phenotype with a
    signal in both modalities."""
    allowed = eligible_labels()
    bad = [x for x in labels if x not in allowed]
    if bad:
        raise UserError(
            f"config: synth.modal_inconsistency: {bad[0]!r} has no planted signal in both modalities; "
            f"allowed: {'; '.join(allowed)}"
        )
    return tuple(labels)


def draw(rng: np.random.Generator, adm_labels: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    """Per admission and phenotype (n, 25) int8: the channel of a positive of a chosen label (EHR or
    CXR), NONE elsewhere."""
    channel = np.zeros(adm_labels.shape, np.int8)
    for label in labels:
        k = PHENOTYPES.index(label)
        positive = adm_labels[:, k]
        image = rng.random(len(adm_labels)) < CXR_SHARE
        channel[positive, k] = np.where(image[positive], CXR, EHR)
    return channel


def modality_views(adm_labels: np.ndarray, channel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the labels the time series is generated from, the labels the images are drawn from): a
    positive whose channel is the other modality is absent from a modality's view."""
    return adm_labels & (channel != CXR), adm_labels & (channel != EHR)
