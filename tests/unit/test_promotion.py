"""The promotion gate: the champion moves only when the candidate wins beyond the noise, on the same data."""

from __future__ import annotations

import numpy as np
import pytest

from mlvs.ml.decision import contact_values, net_value
from mlvs.ml.gate import (
    DataMismatchError,
    Margins,
    Scored,
    campaign_customer_values,
    compare,
    rows_sha256,
    weighted_roc_auc,
)
from mlvs.ml.params import BusinessParams

# A caught churner is worth 0.35 x 600 - 40 = 170, a wasted offer -40.
BUSINESS = BusinessParams(
    customer_value=600.0, save_rate=0.35, offer_cost=40.0, non_churner_cost=0.0, budget_share=0.2
)


def customer_values(labels: np.ndarray):
    return campaign_customer_values(labels, contact_values(BUSINESS, np.full(labels.size, 50.0)))


DATA = "a" * 64
MARGINS = Margins(resamples=400, confidence=0.95)


def churners(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and a latent churn score that explains them (about a quarter churn)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=rows)
    labels = (latent + rng.normal(scale=0.8, size=rows) > 0.9).astype(int)
    return labels, latent


def probabilities(latent: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """A model's probabilities: the latent score blurred by `noise`, squashed into (0, 1)."""
    rng = np.random.default_rng(seed)
    return 1.0 / (1.0 + np.exp(-(2.0 * latent - 2.0 + rng.normal(scale=noise, size=latent.size))))


def decide(labels, candidate, champion, margins=MARGINS, candidate_data=DATA):
    return compare(
        labels,
        Scored("candidate", candidate, candidate_data, 0.2),
        Scored("champion", champion, DATA, 0.2),
        customer_values(labels),
        margins,
        seed=7,
    )


def test_a_difference_inside_the_noise_keeps_the_champion() -> None:
    labels, latent = churners(800, seed=1)
    champion = probabilities(latent, noise=1.0, seed=2)
    candidate = probabilities(latent, noise=1.0, seed=3)  # as good, different noise
    decision = decide(labels, candidate, champion)
    assert not decision.promote
    auc = decision.comparisons[0]
    assert auc.interval_low < 0 < auc.interval_high
    assert "inside the noise" in decision.reason or "below the required" in decision.reason


def test_a_clearly_better_candidate_moves_the_champion() -> None:
    labels, latent = churners(800, seed=1)
    champion = probabilities(latent, noise=3.0, seed=2)
    candidate = probabilities(latent, noise=0.3, seed=3)
    decision = decide(labels, candidate, champion)
    assert decision.promote, decision.reason
    assert all(c.passed and c.interval_low > 0 for c in decision.comparisons)


def test_a_significant_gain_below_the_absolute_margin_is_refused() -> None:
    labels, latent = churners(800, seed=1)
    champion = probabilities(latent, noise=3.0, seed=2)
    candidate = probabilities(latent, noise=0.3, seed=3)
    gain = decide(labels, candidate, champion).comparisons[0].gain
    strict = Margins(roc_auc_gain=gain + 0.01, resamples=400)
    decision = decide(labels, candidate, champion, strict)
    assert not decision.promote
    assert "roc_auc gain" in decision.reason and "below the required" in decision.reason


def test_the_relative_margin_counts_when_it_is_the_larger() -> None:
    margins = Margins(net_value_gain=100.0, net_value_gain_relative=0.1)
    assert margins.required("net_value", 5000.0) == 500.0
    assert margins.required("net_value", 500.0) == 100.0


def test_models_scored_on_different_data_are_not_compared() -> None:
    labels, latent = churners(200, seed=1)
    proba = probabilities(latent, noise=1.0, seed=2)
    with pytest.raises(DataMismatchError, match="same held-out rows"):
        decide(labels, proba, proba, candidate_data="b" * 64)


def test_probabilities_that_do_not_match_the_labels_are_refused() -> None:
    labels, latent = churners(200, seed=1)
    proba = probabilities(latent, noise=1.0, seed=2)
    with pytest.raises(DataMismatchError, match="one probability per"):
        decide(labels, proba[:-1], proba)


def test_the_same_seed_gives_the_same_decision() -> None:
    labels, latent = churners(300, seed=1)
    a, b = probabilities(latent, 1.0, 2), probabilities(latent, 0.8, 3)
    assert decide(labels, a, b).to_dict() == decide(labels, a, b).to_dict()


def test_weighted_roc_auc_with_unit_weights_is_scikit_learns_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    labels, latent = churners(500, seed=4)
    scores = np.round(probabilities(latent, 1.0, 5), 1)  # many ties
    ours = weighted_roc_auc(labels, scores, np.ones((1, labels.size)))[0]
    assert ours == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_weighted_roc_auc_counts_a_row_drawn_twice_twice() -> None:
    from sklearn.metrics import roc_auc_score

    labels, latent = churners(300, seed=6)
    scores = probabilities(latent, 1.0, 7)
    counts = np.random.default_rng(8).multinomial(300, np.full(300, 1 / 300))
    repeated = np.repeat(np.arange(300), counts)
    expected = roc_auc_score(labels[repeated], scores[repeated])
    assert weighted_roc_auc(labels, scores, counts[None, :].astype(float))[0] == pytest.approx(
        expected, abs=1e-12
    )


def test_customer_values_add_up_to_the_business_net_value() -> None:
    labels, latent = churners(400, seed=9)
    proba = probabilities(latent, 1.0, 10)
    values = customer_values(labels)(proba, 0.3)
    contact = contact_values(BUSINESS, np.full(labels.size, 50.0))
    assert values.sum() == pytest.approx(net_value(labels, proba, 0.3, contact))
    caught = int(((proba >= 0.3) & (labels == 1)).sum())
    wasted = int(((proba >= 0.3) & (labels == 0)).sum())
    assert values.sum() == pytest.approx(170.0 * caught - 40.0 * wasted)


def test_rows_hash_changes_with_one_label() -> None:
    import pandas as pd

    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    labels = pd.Series([0, 1, 0])
    flipped = pd.Series([0, 1, 1])
    assert rows_sha256(frame, labels) == rows_sha256(frame.copy(), labels.copy())
    assert rows_sha256(frame, labels) != rows_sha256(frame, flipped)
