"""Correlated phenotype labels per admission, with roughly the paper's prevalences (Table 3).

A latent Gaussian factor model: five factors (cardiac, infection, metabolic, respiratory, liver)
load on the labels so that related phenotypes co-occur (sepsis with shock, CHF with coronary
disease, diabetes with CKD, ...). Each label's threshold is set so its marginal prevalence is the
paper's. The infection factor also drives the stay's acuity, which makes sicker stays more likely
to get a chest X-ray and pushes their vital signs.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from drfuse.phenotypes import PHENOTYPES

FACTORS = ("card", "inf", "met", "resp", "liver")

# label -> (prevalence in the paper's Table 3, factor loadings)
MODEL = {
    "Acute and unspecified renal failure": (0.32, {"inf": 0.4, "met": 0.3}),
    "Acute cerebrovascular disease": (0.07, {"card": 0.2}),
    "Acute myocardial infarction": (0.09, {"card": 0.5}),
    "Cardiac dysrhythmias": (0.38, {"card": 0.5}),
    "Chronic kidney disease": (0.24, {"met": 0.6, "card": 0.2}),
    "Chronic obstructive pulmonary disease and bronchiectasis": (0.15, {"resp": 0.6}),
    "Complications of surgical procedures or medical care": (0.22, {"inf": 0.2}),
    "Conduction disorders": (0.11, {"card": 0.5}),
    "Congestive heart failure; nonhypertensive": (0.29, {"card": 0.6, "met": 0.2}),
    "Coronary atherosclerosis and other heart disease": (0.34, {"card": 0.6, "met": 0.2}),
    "Diabetes mellitus with complications": (0.12, {"met": 0.7}),
    "Diabetes mellitus without complication": (0.21, {"met": 0.5}),
    "Disorders of lipid metabolism": (0.41, {"met": 0.4, "card": 0.4}),
    "Essential hypertension": (0.44, {"met": 0.3, "card": 0.2}),
    "Fluid and electrolyte disorders": (0.45, {"inf": 0.4, "met": 0.2}),
    "Gastrointestinal hemorrhage": (0.07, {"liver": 0.5}),
    "Hypertension with complications and secondary hypertension": (0.22, {"met": 0.6, "card": 0.3}),
    "Other liver diseases": (0.17, {"liver": 0.7}),
    "Other lower respiratory disease": (0.13, {"resp": 0.4}),
    "Other upper respiratory disease": (0.05, {"resp": 0.3}),
    "Pleurisy; pneumothorax; pulmonary collapse": (0.10, {"resp": 0.4}),
    "Pneumonia (except that caused by tuberculosis or sexually transmitted disease)": (0.18, {"resp": 0.4, "inf": 0.5}),
    "Respiratory failure; insufficiency; arrest (adult)": (0.28, {"resp": 0.5, "inf": 0.5}),
    "Septicemia (except in labor)": (0.22, {"inf": 0.75}),
    "Shock": (0.17, {"inf": 0.75}),
}
assert set(MODEL) == set(PHENOTYPES), "phenotype model out of step with drfuse.phenotypes"

PREVALENCE = np.array([MODEL[name][0] for name in PHENOTYPES])
LOADINGS = np.array([[MODEL[name][1].get(f, 0.0) for f in FACTORS] for name in PHENOTYPES])
THRESHOLDS = np.array([NormalDist().inv_cdf(1.0 - p) for p in PREVALENCE])


def label_index(name: str) -> int:
    return PHENOTYPES.index(name)


def sample_labels(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (labels bool (n, 25) in PHENOTYPES order, acuity float (n,), about N(0, 1))."""
    factors = rng.standard_normal((n, len(FACTORS)))
    residual_sd = np.sqrt(1.0 - (LOADINGS**2).sum(axis=1))
    latent = factors @ LOADINGS.T + rng.standard_normal((n, len(PHENOTYPES))) * residual_sd
    labels = latent > THRESHOLDS
    acute = labels[
        :,
        [
            label_index("Septicemia (except in labor)"),
            label_index("Shock"),
            label_index("Respiratory failure; insufficiency; arrest (adult)"),
        ],
    ].sum(axis=1)
    raw = 0.6 * factors[:, FACTORS.index("inf")] + 0.5 * acute + 0.5 * rng.standard_normal(n)
    acuity = (raw - raw.mean()) / max(raw.std(), 1e-9) if n > 1 else raw
    return labels, acuity
