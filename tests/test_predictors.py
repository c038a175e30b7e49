"""What predicts training: features of step-0 measurements, Spearman's ρ and AUC against scipy and sklearn."""

import numpy as np
import pandas as pd
import pytest

from initscope.study.predictors import best_predictors, network_features, predictor_table


def test_features_last_worst_and_flags():
    values = {"rms": np.array([[1.0, 2.0, 0.5, 1.0], [1.0, 1.0, np.nan, np.nan]]),
              "effective_rank": np.array([[3.0, 2.0, 1.5, 2.5], [3.0, 3.0, 3.0, 3.0]]),
              "dead_fraction": np.array([[np.nan, 0.1, 0.6, 0.2], [np.nan, 0.0, 0.0, 0.0]])}
    f = network_features(values, np.array([-1, 2]), np.array([[False] * 4, [False, True, False, False]]))
    np.testing.assert_allclose(f["rms@worst"], [np.log(2.0), np.inf])  # an overflowed layer is the worst
    np.testing.assert_array_equal(f["rms@last"][0], 1.0)
    np.testing.assert_array_equal(f["effective_rank@worst"], [1.5, 3.0])
    np.testing.assert_array_equal(f["dead_fraction@worst"], [0.6, 0.0])
    np.testing.assert_array_equal(f["overflow"], [0.0, 1.0])
    np.testing.assert_array_equal(f["collapsed"], [0.0, 1.0])


def test_rho_and_auc_match_scipy_and_sklearn(rng):
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    n = 60
    loss = rng.lognormal(size=n)
    features = pd.DataFrame({"good": -np.log(loss) + 0.5 * rng.standard_normal(n), "noise": rng.standard_normal(n)})
    threshold = float(np.median(loss))
    table = predictor_table(features, loss, threshold=threshold, boot=300, rng=rng).set_index("feature")
    for name in ("good", "noise"):
        assert table.loc[name, "spearman_rho"] == pytest.approx(spearmanr(features[name], loss).statistic, abs=1e-12)
        assert table.loc[name, "auc"] == pytest.approx(roc_auc_score(loss < threshold, features[name]), abs=1e-12)
        assert table.loc[name, "rho_lo"] <= table.loc[name, "spearman_rho"] <= table.loc[name, "rho_hi"]
    assert table.index[0] == "good" and table.loc["good", "rho_hi"] < 0  # its interval excludes 0
    assert best_predictors(table.reset_index(), k=1).startswith("Best step-0 predictors of the final loss: good")


def test_diverged_networks_rank_worst(rng):
    loss = np.array([0.1, 0.2, np.inf, np.inf, 0.3])
    table = predictor_table(pd.DataFrame({"x": [5.0, 4.0, 1.0, 0.0, 3.0]}), loss, threshold=1.0, boot=50, rng=rng)
    # The two diverged networks tie for the worst loss; x orders every other pair as the loss does.
    assert table.loc[0, "spearman_rho"] < -0.95 and table.loc[0, "auc"] == 1.0
