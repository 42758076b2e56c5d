"""GaussianDensity / KDE against scikit-learn references, invariants and the fit-provenance guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.covariance import EmpiricalCovariance, LedoitWolf
from sklearn.neighbors import KernelDensity

from cutpaste_lib.density import (
    Embeddings,
    GaussianDensity,
    GaussianKDE,
    NonFiniteFeaturesError,
    ProvenanceError,
    SingularCovarianceError,
    check_provenance,
    cholesky,
    cross_fit,
    empirical_covariance,
    ensemble_scores,
    l2_normalize,
    ledoit_wolf,
    mahalanobis,
    make_density,
    scott_bandwidth,
    shrink_ledoit_wolf,
)


def _features(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Correlated, anisotropic features (a random linear map of Gaussian noise, plus an offset)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ mix + 0.3


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("n,d", [(200, 16), (12, 40)])  # N > D and N < D
def test_ledoit_wolf_matches_sklearn(n, d):
    x = _features(n, d)
    ref = LedoitWolf().fit(x.numpy())
    cov, shrinkage = ledoit_wolf(x)
    assert cov.dtype == torch.float64
    assert abs(float(shrinkage) - ref.shrinkage_) <= 1e-6 * ref.shrinkage_
    assert _rel(cov, ref.covariance_) <= 1e-6
    gde = GaussianDensity(normalize=False).fit(Embeddings.clean_train(x))
    assert _rel(gde.covariance, ref.covariance_) <= 1e-6
    assert _rel(gde.precision, ref.precision_) <= 1e-6
    assert _rel(gde.mean, ref.location_) <= 1e-12


def test_ledoit_wolf_is_batched():
    xs = torch.stack([_features(30, 8, seed=s) for s in range(3)])  # (3, 30, 8)
    cov, shrinkage = ledoit_wolf(xs)
    for i in range(3):
        ref = LedoitWolf().fit(xs[i].numpy())
        assert _rel(cov[i], ref.covariance_) <= 1e-10
        assert abs(float(shrinkage[i]) - ref.shrinkage_) <= 1e-10


@pytest.mark.parametrize("n,d", [(200, 16), (12, 40)])
def test_shrinkage_from_moments_matches_sklearn(n, d):
    # The one Ledoit-Wolf formula, fed only sufficient statistics (S, N, sum ||x - mean||^4), as
    # the streamed moments of localization feed it.
    x = _features(n, d, seed=11)
    xc = x - x.mean(0)
    cov = xc.T @ xc / n
    fourth = ((xc * xc).sum(-1) ** 2).sum()
    shrunk, shrinkage = shrink_ledoit_wolf(cov, n=n, fourth_moment=fourth)
    ref = LedoitWolf().fit(x.numpy())
    assert abs(float(shrinkage) - ref.shrinkage_) <= 1e-10 * ref.shrinkage_
    assert _rel(shrunk, ref.covariance_) <= 1e-10
    batch_cov, batch_shrinkage = ledoit_wolf(x)
    assert _rel(shrunk, batch_cov) <= 1e-12 and _rel(shrinkage, batch_shrinkage) <= 1e-12


def test_cross_fit_scores_each_fold_with_the_other_folds_fit():
    n = 7
    fitted = []

    def fit(rows):
        fitted.append(rows.tolist())
        return set(rows.tolist())

    def score(model, rows):  # the "score" of a row: which rows its model was fitted on
        assert not model & set(rows.tolist())  # never scored by a fit that saw it
        return torch.tensor([[sum(model), len(model)]] * len(rows))

    out = cross_fit(n, fit=fit, score=score)
    assert fitted == [[0, 2, 4, 6], [1, 3, 5]]
    for i in range(n):
        other = [j for j in range(n) if j % 2 != i % 2]
        assert out[i].tolist() == [sum(other), len(other)]


@pytest.mark.parametrize("folds", [3, 7])
def test_k_fold_cross_fit_scores_each_row_with_all_rows_but_its_fold(folds):
    n = 7
    fitted = []

    def fit(rows):
        fitted.append(rows.tolist())
        return set(rows.tolist())

    def score(model, rows):
        assert not model & set(rows.tolist())  # never scored by a fit that saw it
        return torch.tensor([[sum(model), len(model)]] * len(rows))

    out = cross_fit(n, fit=fit, score=score, folds=folds)
    assert len(fitted) == folds and all(rows == sorted(rows) for rows in fitted)
    for i in range(n):
        others = [j for j in range(n) if j % folds != i % folds]  # folds = n: leave-one-out
        assert out[i].tolist() == [sum(others), len(others)]
    with pytest.raises(ValueError, match="folds"):
        cross_fit(n, fit=fit, score=score, folds=n + 1)


def test_check_provenance_refuses_test_defective_and_augmented():
    good = torch.zeros(3, dtype=torch.int64)
    check_provenance(split="train", labels=good)
    check_provenance(split="train", labels=None)  # unknown labels: the caller vouches
    cases = [
        ({"split": "train", "labels": good, "augmentation": "scar"}, "augmented"),
        ({"split": "test", "labels": good}, "'test' split"),
        ({"split": "train", "labels": torch.tensor([0, 1, 1])}, "2 defective"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ProvenanceError, match=match):
            check_provenance(**kwargs, what="the patch density")


def test_empirical_covariance_matches_sklearn():
    x = _features(100, 10)
    mean, cov = empirical_covariance(x)
    ref = EmpiricalCovariance().fit(x.numpy())
    assert _rel(cov, ref.covariance_) <= 1e-12 and _rel(mean, ref.location_) <= 1e-12


@pytest.mark.parametrize(
    "method,reference", [("empirical", EmpiricalCovariance), ("ledoit_wolf", LedoitWolf)]
)
def test_mahalanobis_matches_sklearn(method, reference):
    x, y = _features(150, 12, seed=1), _features(40, 12, seed=2) * 1.5
    ref = reference().fit(x.numpy())
    gde = GaussianDensity(method, normalize=False).fit(Embeddings.clean_train(x))
    assert _rel(gde.score(y), ref.mahalanobis(y.numpy())) <= 1e-6
    # The functional core on sklearn's own covariance gives sklearn's squared distance too.
    direct = mahalanobis(
        y, torch.as_tensor(ref.location_), cholesky(torch.as_tensor(ref.covariance_))
    )
    assert _rel(direct, ref.mahalanobis(y.numpy())) <= 1e-6


def test_mahalanobis_hand_case():
    # Diagonal covariance diag(4, 1): distance of (2, 1) from 0 is 2^2/4 + 1^2/1 = 2.
    factor = torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64))
    d2 = mahalanobis(torch.tensor([[2.0, 1.0], [0.0, 0.0]]), torch.zeros(2), factor)
    assert torch.allclose(d2, torch.tensor([2.0, 0.0], dtype=torch.float64))


def test_normalization_is_l2_before_fit():
    x = _features(60, 6)
    gde = GaussianDensity().fit(Embeddings.clean_train(x))
    ref = LedoitWolf().fit(l2_normalize(x).numpy())
    y = _features(5, 6, seed=3)
    assert _rel(gde.score(y), ref.mahalanobis(l2_normalize(y).numpy())) <= 1e-6


def test_fewer_images_than_dimensions():
    x, y = _features(10, 64), _features(20, 64, seed=4)
    lw = GaussianDensity().fit(Embeddings.clean_train(x))
    assert 0 < float(lw.shrinkage) <= 1
    assert torch.isfinite(lw.score(y)).all()
    ridge = GaussianDensity("ridge", ridge=1e-3).fit(Embeddings.clean_train(x))
    assert torch.isfinite(ridge.score(y)).all()
    with pytest.raises(SingularCovarianceError, match="ledoit_wolf"):
        GaussianDensity("empirical").fit(Embeddings.clean_train(x))


def test_ridge_adds_diagonal():
    x = _features(50, 5)
    gde = GaussianDensity("ridge", ridge=0.25, normalize=False).fit(Embeddings.clean_train(x))
    expected = EmpiricalCovariance().fit(x.numpy()).covariance_ + 0.25 * np.eye(5)
    assert _rel(gde.covariance, expected) <= 1e-12


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_raise(bad):
    x = _features(20, 4).float()
    x[3, 1] = bad
    with pytest.raises(NonFiniteFeaturesError, match="NaN|inf"):
        GaussianDensity().fit(Embeddings.clean_train(x))
    gde = GaussianDensity().fit(Embeddings.clean_train(_features(20, 4)))
    with pytest.raises(NonFiniteFeaturesError, match="features to score"):
        gde.score(x)


def test_score_does_not_depend_on_other_test_images():
    x, y = _features(80, 16), _features(30, 16, seed=5)
    for density in (GaussianDensity(), GaussianKDE()):
        density.fit(Embeddings.clean_train(x))
        batch = density.score(y)
        alone = torch.cat([density.score(y[i : i + 1]) for i in range(len(y))])
        assert torch.allclose(batch, alone, rtol=1e-10, atol=0)
        shuffled = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        assert torch.allclose(density.score(y[shuffled]), batch[shuffled], rtol=1e-10, atol=0)


# -------------------------------------------------- the fit API cannot take augmented / test images


def _embeddings(split="train", labels=None, augmentation=None, n=20, d=6):
    labels = torch.zeros(n, dtype=torch.int64) if labels is None else labels
    defects = tuple("good" if int(v) == 0 else "crack" for v in labels)
    return Embeddings(_features(n, d), labels, defects, split, "toy", augmentation)


def test_fit_refuses_raw_tensor():
    with pytest.raises(TypeError, match="fit_clean_features"):
        GaussianDensity().fit(_features(20, 6))
    with pytest.raises(TypeError, match="fit_clean_features"):
        GaussianKDE().fit(_features(20, 6))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"augmentation": "cutpaste"}, "augmented"),
        ({"augmentation": "scar"}, "augmented"),
        ({"split": "test"}, "train split"),
        ({"labels": torch.tensor([0] * 19 + [1])}, "defective"),
    ],
)
def test_fit_refuses_wrong_provenance(kwargs, match):
    for density in (GaussianDensity(), GaussianKDE()):
        with pytest.raises(ProvenanceError, match=match):
            density.fit(_embeddings(**kwargs))


def test_explicit_raw_fit_equals_provenance_fit():
    emb = _embeddings()
    a = GaussianDensity().fit(emb)
    b = GaussianDensity().fit_clean_features(emb.features)
    assert torch.equal(a.cholesky_factor, b.cholesky_factor) and torch.equal(a.mean, b.mean)


def test_embeddings_from_cache_carries_provenance():
    class Cache:  # the attributes of cutpaste_lib.data.ImageCache that Embeddings reads
        labels = torch.tensor([0, 0, 1])
        defects = ["good", "good", "crack"]
        split = "test"
        category = "toy"
        paths = ["a.png", "b.png", "c.png"]

        def __len__(self):
            return 3

    emb = Embeddings.from_cache(Cache(), torch.randn(3, 4))
    assert (
        emb.split == "test" and emb.defects == ("good", "good", "crack") and emb.category == "toy"
    )
    with pytest.raises(ProvenanceError):
        GaussianDensity().fit(emb)
    with pytest.raises(ValueError, match="feature rows"):
        Embeddings.from_cache(Cache(), torch.randn(2, 4))


# -------------------------------------------------- dense features (localization), state, KDE, ensemble


def test_per_location_equals_separate_fits():
    x = _features(40 * 6, 5).reshape(40, 2, 3, 5)  # (N, H, W, D)
    y = _features(7 * 6, 5, seed=6).reshape(7, 2, 3, 5)
    gde = GaussianDensity(per_location=True, chunk_size=4).fit(Embeddings.clean_train(x))
    scores = gde.score(y)
    assert scores.shape == (7, 2, 3)
    for i in range(2):
        for j in range(3):
            ref = LedoitWolf().fit(l2_normalize(x[:, i, j]).numpy())
            assert _rel(scores[:, i, j], ref.mahalanobis(l2_normalize(y[:, i, j]).numpy())) <= 1e-6
    shared = GaussianDensity().fit(Embeddings.clean_train(x))
    ref = LedoitWolf().fit(l2_normalize(x.reshape(-1, 5)).numpy())
    assert (
        _rel(shared.score(y).reshape(-1), ref.mahalanobis(l2_normalize(y.reshape(-1, 5)).numpy()))
        <= 1e-6
    )


def test_state_dict_round_trip(tmp_path):
    x, y = _features(50, 8), _features(9, 8, seed=7)
    gde = GaussianDensity("ridge", ridge=1e-3).fit(Embeddings.clean_train(x))
    torch.save(gde.state_dict(), tmp_path / "gde.pt")
    state = torch.load(tmp_path / "gde.pt", weights_only=True)
    loaded = GaussianDensity(**gde.config()).load_state_dict(state)
    assert torch.equal(loaded.score(y), gde.score(y))
    kde = GaussianKDE(bandwidth=0.3).fit(Embeddings.clean_train(x))
    kde2 = GaussianKDE(**kde.config()).load_state_dict(kde.state_dict())
    assert torch.equal(kde2.score(y), kde.score(y))


@pytest.mark.parametrize("bandwidth", [0.2, "scott"])
def test_kde_matches_sklearn(bandwidth):
    x, y = _features(120, 6), _features(15, 6, seed=8)
    kde = GaussianKDE(bandwidth, normalize=False).fit(Embeddings.clean_train(x))
    h = 0.2 if bandwidth == 0.2 else scott_bandwidth(x)
    assert kde.bandwidth == pytest.approx(h)
    ref = KernelDensity(kernel="gaussian", bandwidth=h).fit(x.numpy()).score_samples(y.numpy())
    assert np.allclose(-kde.score(y).numpy(), ref, rtol=1e-6, atol=1e-8)


def test_scott_bandwidth_formula():
    x = torch.zeros(81, 2, dtype=torch.float64)
    x[:, 0] = torch.linspace(-1, 1, 81)  # per-dim variances v and 0; sigma^2 = v / 2
    v = float(x[:, 0].var(unbiased=False))
    assert scott_bandwidth(x) == pytest.approx((v / 2) ** 0.5 * 81 ** (-1 / 6))


def test_make_density_and_unknown_method():
    assert isinstance(make_density("kde"), GaussianKDE)
    assert make_density("ridge").covariance_method == "ridge"
    with pytest.raises(ValueError, match="unknown density"):
        make_density("gmm")


def test_ensemble_standardises_with_training_statistics():
    # Model B's scores are model A's times 100 plus 7: after standardisation they agree exactly.
    train_a, test_a = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([2.5, 10.0])
    train_b, test_b = train_a * 100 + 7, test_a * 100 + 7
    out = ensemble_scores([test_a, test_b], [train_a, train_b])
    expected = (test_a.double() - 2.5) / train_a.double().std()
    assert torch.allclose(out, expected)
    # Scores of a test image never change when other test images are added.
    assert torch.allclose(ensemble_scores([test_a[:1], test_b[:1]], [train_a, train_b]), out[:1])


def test_ensemble_with_fitted_densities_uses_stored_train_stats():
    x, y = _features(60, 6), _features(10, 6, seed=9)
    dens = [
        GaussianDensity().fit(Embeddings.clean_train(x)),
        GaussianDensity("ridge").fit(Embeddings.clean_train(x)),
    ]
    train = [d.cross_fitted_scores(x) for d in dens]
    a = ensemble_scores([d.score(y) for d in dens], densities=dens)
    b = ensemble_scores([d.score(y) for d in dens], train)
    assert torch.allclose(a, b, rtol=1e-12)


def test_cross_fitted_scores_match_sklearn_fitted_on_the_other_half():
    x = _features(41, 12, seed=3)  # odd N: the halves differ in size
    gde = GaussianDensity().fit(Embeddings.clean_train(x))
    oof = gde.cross_fitted_scores(x).numpy()
    z = l2_normalize(x).numpy()
    for fit_rows, score_rows in (
        (slice(1, None, 2), slice(0, None, 2)),
        (slice(0, None, 2), slice(1, None, 2)),
    ):
        ref = LedoitWolf().fit(z[fit_rows]).mahalanobis(z[score_rows])
        assert _rel(oof[score_rows], ref) < 1e-8
    # the statistics that standardise the model in an ensemble are those of these scores
    assert float(gde.train_score_mean) == pytest.approx(float(oof.mean()), rel=1e-12)
    assert float(gde.train_score_std) == pytest.approx(float(oof.std(ddof=1)), rel=1e-12)


@pytest.mark.parametrize("estimator", [GaussianDensity, GaussianKDE])
def test_training_statistics_describe_new_clean_images(estimator):
    # N < D: in-sample scores are far too small and too narrow (the KDE's are all equal: each
    # point's own kernel dominates); cross-fitted ones look like scores of new clean images.
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(128, 128, generator=g, dtype=torch.float64) / 128**0.5
    x = torch.randn(100, 128, generator=g, dtype=torch.float64) @ mix + 0.3
    new = torch.randn(400, 128, generator=g, dtype=torch.float64) @ mix + 0.3
    est = estimator().fit(Embeddings.clean_train(x))
    held, inside = est.score(new), est.score(x)
    # why in-sample statistics would be wrong: too narrow, and far below (by 4-10 held-out stds)
    assert inside.std() < 0.6 * held.std() and held.mean() - inside.mean() > 3 * held.std()
    # cross-fitted: within one held-out std (each half-density saw half the data: a bit above)
    assert abs(float(est.train_score_mean - held.mean())) < float(held.std())
    assert 0.7 < float(est.train_score_std / held.std()) < 1.5


def test_cross_fitted_scores_with_too_few_rows_are_in_sample():
    for n in (4, 5):  # halves of 2: a Ledoit-Wolf Gaussian of 2 points is singular
        x = _features(n, 8)
        gde = GaussianDensity().fit(Embeddings.clean_train(x))
        assert torch.equal(gde.cross_fitted_scores(x), gde.score(x))
    x = _features(6, 8)
    gde = GaussianDensity().fit(Embeddings.clean_train(x))
    assert not torch.equal(gde.cross_fitted_scores(x), gde.score(x))


def test_empirical_covariance_with_singular_halves_warns_and_stays_in_sample():
    x = _features(30, 20)  # N > D, but each half has 15 < 20 rows
    with pytest.warns(UserWarning, match="in-sample"):
        gde = GaussianDensity("empirical").fit(Embeddings.clean_train(x))
    assert float(gde.train_score_mean) == pytest.approx(float(gde.score(x).mean()), rel=1e-12)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    x, y = _features(300, 32), _features(50, 32, seed=10)
    cpu = GaussianDensity().fit(Embeddings.clean_train(x))
    gpu = GaussianDensity().fit(Embeddings.clean_train(x.cuda()))
    assert gpu.cholesky_factor.is_cuda
    assert torch.allclose(gpu.score(y.cuda()).cpu(), cpu.score(y), rtol=1e-8)
