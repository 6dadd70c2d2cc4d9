"""Every built-in metric (runner/metrics/builtin.py) against scikit-learn, on per-sample
statistics built by runner/metrics/tasks.py `sample_stats` from random logits (fixed seeds),
including ties in scores, a class that never occurs, a class never predicted and a
single-class target; and the weights trick: a metric under the counts of a bootstrap
resample equals the metric on the explicitly resampled arrays."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from compare.metrics import significance
from compare.metrics.builtin import BUILTIN, ECE_BINS, Kept, metrics_for
from compare.metrics.tasks import Task, sample_stats

TOL = dict(rel=1e-5, abs=1e-6)  # the kept statistics are float32


def _kept(task: Task, pred, y) -> Kept:
    """A Kept as evaluation builds it: sample_stats on torch tensors, then numpy."""
    stats = sample_stats(task, torch.as_tensor(pred), torch.as_tensor(y))
    return Kept({k: v.numpy() for k, v in stats.items()}, np.asarray(y), task.width)


def _metric(name: str, kind: str, width: int):
    return metrics_for(kind, width)[name]


def _value(name: str, kind: str, kept: Kept) -> float:
    return _metric(name, kind, kept.width).value(kept)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _ece_numpy(conf: np.ndarray, correct: np.ndarray) -> float:
    """15 equal-width bins (b/15, (b+1)/15] of the top-1 confidence, written out directly."""
    n, total = len(conf), 0.0
    for b in range(ECE_BINS):
        inside = (conf > b / ECE_BINS) & (conf <= (b + 1) / ECE_BINS)
        if b == 0:
            inside |= conf == 0
        if inside.any():
            total += inside.sum() / n * abs(correct[inside].mean() - conf[inside].mean())
    return total


# ---------------------------------------------------------------- data sets


def multiclass(seed: int = 0, n: int = 300, c: int = 6):
    """Targets never take class c-2; logits never make class c-1 the top-1 (but it occurs)."""
    rng = np.random.default_rng(seed)
    y = rng.choice([k for k in range(c) if k != c - 2], size=n)
    logits = rng.normal(size=(n, c)).astype(np.float32)
    logits[np.arange(n), y] += 1.0  # better than chance
    logits[:, c - 1] -= 20.0
    return logits, y.astype(np.int64)


def binary_with_ties(seed: int = 1, n: int = 400):
    """Integer logits: many samples share a p(class 1); some have equal logits (argmax: 0)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    logits = rng.integers(-2, 3, size=(n, 2)).astype(np.float32)
    logits[:, 1] += y  # informative
    return logits, y.astype(np.int64)


def multilabel(seed: int = 2, n: int = 300, labels: int = 5, dead_label: bool = True):
    """0/1 targets; with dead_label the last label is never positive and never predicted."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < 0.35).astype(np.float32)
    logits = (rng.normal(size=(n, labels)) + 1.5 * (y - 0.5)).astype(np.float32)
    if dead_label:
        y[:, -1], logits[:, -1] = 0.0, -5.0
    return logits, y


def regression(seed: int = 3, n: int = 300, outputs: int = 1):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(n, outputs)).astype(np.float32) * np.arange(1, outputs + 1, dtype=np.float32)
    pred = (y + rng.normal(scale=0.5, size=(n, outputs))).astype(np.float32)
    return pred, y


CHECKED: set[tuple[str, str]] = set()  # (task, metric) pairs compared with sklearn below


def check(task: str, name: str, ours: float, theirs: float) -> None:
    CHECKED.add((task, name))
    assert ours == pytest.approx(theirs, **TOL), f"{task} {name}: ours {ours!r}, sklearn {theirs!r}"


# ---------------------------------------------------------------- single-label classification


@pytest.mark.parametrize("seed", [0, 1])
def test_multiclass_matches_sklearn(seed):
    logits, y = multiclass(seed)
    c = logits.shape[1]
    kept = _kept(Task("classification", c), logits, y)
    top1 = logits.argmax(axis=1)
    assert not (y == c - 2).any() and (top1 == c - 2).any()  # a class that never occurs, but is predicted
    assert (y == c - 1).any() and not (top1 == c - 1).any()  # a class that occurs, never predicted
    probs = _softmax(logits.astype(np.float64))
    labels = list(range(c))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the class missing from y_true
        check("classification", "acc", _value("acc", "classification", kept), skm.accuracy_score(y, top1))
        for k in range(2, 6):
            check("classification", f"top{k}_acc", _value(f"top{k}_acc", "classification", kept), skm.top_k_accuracy_score(y, logits, k=k, labels=labels))
        check("classification", "balanced_acc", _value("balanced_acc", "classification", kept), skm.balanced_accuracy_score(y, top1))
        check("classification", "macro_f1", _value("macro_f1", "classification", kept), skm.f1_score(y, top1, average="macro"))
        check("classification", "weighted_f1", _value("weighted_f1", "classification", kept), skm.f1_score(y, top1, average="weighted"))
    check("classification", "nll", _value("nll", "classification", kept), skm.log_loss(y, probs, labels=labels))
    brier = np.mean(((probs - np.eye(c)[y]) ** 2).sum(axis=1))  # Brier (1950): the sum over classes
    check("classification", "brier", _value("brier", "classification", kept), brier)
    conf = kept.stats["p_max"].astype(np.float64)
    check("classification", "ece", _value("ece", "classification", kept), _ece_numpy(conf, (top1 == y).astype(float)))


def test_binary_with_ties_matches_sklearn():
    logits, y = binary_with_ties()
    kept = _kept(Task("classification", 2), logits, y)
    p_pos = kept.stats["p_pos"].astype(np.float64)
    assert len(np.unique(p_pos)) <= 10  # heavy ties in the score (400 samples)
    assert (logits[:, 0] == logits[:, 1]).any()  # and in the logits
    top1 = logits.argmax(axis=1)  # numpy: the first maximum, as torch.argmax
    probs = _softmax(logits.astype(np.float64))
    assert set(metrics_for("classification", 2)) == {m.name for m in BUILTIN if set(m.tasks) & {"classification", "binary"} and not m.name.startswith("top")}
    check("binary", "acc", _value("acc", "classification", kept), skm.accuracy_score(y, top1))
    check("binary", "balanced_acc", _value("balanced_acc", "classification", kept), skm.balanced_accuracy_score(y, top1))
    check("binary", "macro_f1", _value("macro_f1", "classification", kept), skm.f1_score(y, top1, average="macro"))
    check("binary", "weighted_f1", _value("weighted_f1", "classification", kept), skm.f1_score(y, top1, average="weighted"))
    check("binary", "nll", _value("nll", "classification", kept), skm.log_loss(y, probs, labels=[0, 1]))
    check("binary", "brier", _value("brier", "classification", kept), 2 * skm.brier_score_loss(y, probs[:, 1]))
    check("binary", "ece", _value("ece", "classification", kept), _ece_numpy(kept.stats["p_max"].astype(np.float64), (top1 == y).astype(float)))
    check("binary", "auroc", _value("auroc", "classification", kept), skm.roc_auc_score(y, p_pos))
    check("binary", "average_precision", _value("average_precision", "classification", kept), skm.average_precision_score(y, p_pos))


def test_binary_continuous_scores_match_sklearn():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, size=500)
    logits = np.stack([np.zeros(500), rng.normal(size=500) + y], axis=1).astype(np.float32)
    kept = _kept(Task("classification", 2), logits, y)
    p_pos = kept.stats["p_pos"].astype(np.float64)
    check("binary", "auroc", _value("auroc", "classification", kept), skm.roc_auc_score(y, p_pos))
    check("binary", "average_precision", _value("average_precision", "classification", kept), skm.average_precision_score(y, p_pos))


def test_single_class_target():
    """Every target is class 1 of 3: sklearn defines acc, balanced accuracy, F1, log loss;
    binary with every target 1: AUROC is undefined (NaN in both), AP is 1."""
    rng = np.random.default_rng(5)
    y = np.ones(100, dtype=np.int64)
    logits = rng.normal(size=(100, 3)).astype(np.float32)
    kept = _kept(Task("classification", 3), logits, y)
    top1 = logits.argmax(axis=1)
    probs = _softmax(logits.astype(np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _value("acc", "classification", kept) == pytest.approx(skm.accuracy_score(y, top1), **TOL)
        assert _value("balanced_acc", "classification", kept) == pytest.approx(skm.balanced_accuracy_score(y, top1), **TOL)
        assert _value("macro_f1", "classification", kept) == pytest.approx(skm.f1_score(y, top1, average="macro"), **TOL)
        assert _value("weighted_f1", "classification", kept) == pytest.approx(skm.f1_score(y, top1, average="weighted"), **TOL)
    assert _value("nll", "classification", kept) == pytest.approx(skm.log_loss(y, probs, labels=[0, 1, 2]), **TOL)

    yb = np.ones(50, dtype=np.int64)
    kb = _kept(Task("classification", 2), rng.normal(size=(50, 2)).astype(np.float32), yb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isnan(skm.roc_auc_score(yb, kb.stats["p_pos"]))  # sklearn >= 1.6: NaN and a warning
    assert math.isnan(_value("auroc", "classification", kb))
    assert _value("average_precision", "classification", kb) == pytest.approx(skm.average_precision_score(yb, kb.stats["p_pos"]))  # all positive: 1


def test_average_precision_without_a_positive_is_nan_where_sklearn_says_zero():
    """Documented difference: with no positive target sklearn returns 0.0 (and warns); ours is
    NaN (no recall to integrate over)."""
    rng = np.random.default_rng(6)
    y = np.zeros(50, dtype=np.int64)
    kept = _kept(Task("classification", 2), rng.normal(size=(50, 2)).astype(np.float32), y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert skm.average_precision_score(y, kept.stats["p_pos"]) == 0.0
    assert math.isnan(_value("average_precision", "classification", kept))


def test_ece_bin_edges():
    """(b/15, (b+1)/15]: a confidence on an edge belongs to the lower bin; 1.0 to the last."""
    conf = np.array([1 / 3, 1 / 3 + 1e-9, 2 / 3, 1.0, 1.0, 0.5])
    top1 = np.array([0, 0, 1, 1, 0, 1])
    target = np.array([0, 1, 1, 1, 1, 0])
    kept = Kept({"p_max": conf, "top1": top1}, target, 2)
    check("classification", "ece", _value("ece", "classification", kept), _ece_numpy(conf, (top1 == target).astype(float)))


# ---------------------------------------------------------------- multi-label


@pytest.mark.parametrize("logits_in", [True, False])
def test_multilabel_matches_sklearn(logits_in):
    logits, y = multilabel()
    task = Task("multilabel", y.shape[1], logits=logits_in)
    pred = logits if logits_in else 1 / (1 + np.exp(-logits.astype(np.float64)))  # BCELoss: probabilities
    kept = _kept(task, pred.astype(np.float32), y)
    decision = (logits > 0).astype(int)
    truth = y.astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dead label: ill-defined F1, scored 0 by sklearn
        check("multilabel", "subset_acc", _value("subset_acc", "multilabel", kept), skm.accuracy_score(truth, decision))
        check("multilabel", "hamming", _value("hamming", "multilabel", kept), skm.hamming_loss(truth, decision))
        check("multilabel", "micro_f1", _value("micro_f1", "multilabel", kept), skm.f1_score(truth, decision, average="micro"))
        check("multilabel", "macro_f1", _value("macro_f1", "multilabel", kept), skm.f1_score(truth, decision, average="macro"))
    live_logits, live_y = multilabel(seed=7, dead_label=False)
    live = _kept(Task("multilabel", live_y.shape[1]), live_logits, live_y)
    assert (live_y > 0.5).any(axis=0).all()  # every label has a positive
    check("multilabel", "map", _value("map", "multilabel", live), skm.average_precision_score(live_y.astype(int), live.stats["score"].astype(np.float64), average="macro"))


def test_map_skips_labels_without_a_positive():
    """Documented difference: ours averages over the labels with a positive sample; sklearn's
    macro average scores such a label 0 and counts it."""
    logits, y = multilabel()
    kept = _kept(Task("multilabel", y.shape[1]), logits, y)
    score = kept.stats["score"].astype(np.float64)
    live = [j for j in range(y.shape[1]) if y[:, j].any()]
    expected = np.mean([skm.average_precision_score(y[:, j].astype(int), score[:, j]) for j in live])
    assert _value("map", "multilabel", kept) == pytest.approx(expected, **TOL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = skm.average_precision_score(y.astype(int), score, average="macro")
    assert sk == pytest.approx(expected * len(live) / y.shape[1], **TOL)


# ---------------------------------------------------------------- regression


def test_regression_one_output_matches_sklearn():
    pred, y = regression()
    kept = _kept(Task("regression", 1), pred, y)
    p, t = pred.astype(np.float64).ravel(), y.astype(np.float64).ravel()
    check("regression", "mse", _value("mse", "regression", kept), skm.mean_squared_error(t, p))
    check("regression", "rmse", _value("rmse", "regression", kept), skm.root_mean_squared_error(t, p))
    check("regression", "mae", _value("mae", "regression", kept), skm.mean_absolute_error(t, p))
    check("regression", "r2", _value("r2", "regression", kept), skm.r2_score(t, p))


def test_regression_two_outputs():
    pred, y = regression(outputs=2)
    kept = _kept(Task("regression", 2), pred, y)
    p, t = pred.astype(np.float64), y.astype(np.float64)
    assert _value("r2", "regression", kept) == pytest.approx(skm.r2_score(t, p, multioutput="uniform_average"), **TOL)
    assert _value("mse", "regression", kept) == pytest.approx(skm.mean_squared_error(t, p), **TOL)
    assert _value("mae", "regression", kept) == pytest.approx(skm.mean_absolute_error(t, p), **TOL)
    # rmse is the square root of the output-averaged mse, not sklearn's mean of per-output RMSEs
    assert _value("rmse", "regression", kept) == pytest.approx(math.sqrt(skm.mean_squared_error(t, p)), **TOL)
    assert _value("rmse", "regression", kept) != pytest.approx(skm.root_mean_squared_error(t, p), **TOL)


def test_r2_constant_target():
    """sklearn's force_finite: a constant target gives 1 for a perfect prediction, else 0."""
    y = np.full((20, 1), 3.0, dtype=np.float32)
    for pred in (y.copy(), y + np.linspace(-1, 1, 20, dtype=np.float32)[:, None]):
        kept = _kept(Task("regression", 1), pred, y)
        assert _value("r2", "regression", kept) == pytest.approx(skm.r2_score(y.ravel(), pred.ravel()))


def test_dense_matches_sklearn_on_the_pixels():
    """Dense metrics (runner/metrics/dense.py) from per-image counts, against sklearn on the
    flattened counted pixels (255: ignore_index): pixel_acc = accuracy, mean_acc = balanced
    accuracy, miou = macro Jaccard and dice = macro F1 over the classes in truth or prediction.
    tests/metrics/test_dense_stats.py checks them against torchvision's reference too."""
    rng = np.random.default_rng(33)
    truth = rng.choice(5, size=(12, 6, 7), p=[0.5, 0.2, 0.2, 0.1, 0.0])
    guess = np.where(rng.random(truth.shape) < 0.6, truth, rng.integers(0, 4, size=truth.shape))
    truth[:, 0, :] = 255
    logits = torch.nn.functional.one_hot(torch.from_numpy(guess), 5).movedim(-1, 1).float()
    stats = sample_stats(Task("dense", 5, extent=(6, 7), ignore_index=255), logits, torch.from_numpy(truth))
    kept = Kept({k: v.numpy() for k, v in stats.items()}, truth, 5)
    counted = truth != 255
    t, p = truth[counted], guess[counted]
    labels = sorted(set(t) | set(p))
    check("dense", "pixel_acc", _value("pixel_acc", "dense", kept), skm.accuracy_score(t, p))
    check("dense", "mean_acc", _value("mean_acc", "dense", kept), skm.balanced_accuracy_score(t, p))
    check("dense", "miou", _value("miou", "dense", kept), skm.jaccard_score(t, p, labels=labels, average="macro"))
    check("dense", "dice", _value("dice", "dense", kept), skm.f1_score(t, p, labels=labels, average="macro"))


def test_every_builtin_metric_is_checked():
    """Runs after the comparisons above (pytest keeps definition order): each BUILTIN metric,
    in each task it applies to, met sklearn (or the numpy definition) at least once."""
    if not CHECKED:
        pytest.skip("run the whole file: this test reads what the comparisons above checked")
    expected = {(task, m.name) for m in BUILTIN for task in m.tasks}
    covered = {("classification" if t == "binary" and n not in ("auroc", "average_precision") else t, n) for t, n in CHECKED}
    missing = expected - covered
    assert not missing, f"built-in metrics not compared with sklearn: {sorted(missing)}"


# ---------------------------------------------------------------- the weights trick


def _resampled(kept: Kept, counts: np.ndarray) -> Kept:
    return Kept({k: np.repeat(v, counts, axis=0) for k, v in kept.stats.items()}, np.repeat(kept.target, counts, axis=0), kept.width)


def _case(name: str):
    if name in ("macro_f1", "auroc"):
        logits, y = binary_with_ties() if name == "auroc" else multiclass()
        return "classification", _kept(Task("classification", logits.shape[1]), logits, y)
    pred, y = regression(outputs=2 if name == "r2" else 1)
    return "regression", _kept(Task("regression", y.shape[1]), pred, y)


SKLEARN_ON = {
    "macro_f1": lambda k: skm.f1_score(k.target, k.stats["top1"], average="macro"),
    "auroc": lambda k: skm.roc_auc_score(k.target, k.stats["p_pos"]),
    "r2": lambda k: skm.r2_score(k.target, k.stats["pred"]),
    "rmse": lambda k: skm.root_mean_squared_error(k.target.ravel(), k.stats["pred"].ravel()),
}


@pytest.mark.parametrize("name", ["macro_f1", "auroc", "r2", "rmse"])
def test_resampler_equals_metric_on_the_resampled_arrays(name):
    kind, kept = _case(name)
    metric = _metric(name, kind, kept.width)
    n = len(kept)
    w = next(significance.resample_blocks(n, resamples=25, seed=3))  # [25, n] counts, as the bootstrap draws them
    assert w.shape == (25, n) and (w.sum(axis=1) == n).all()
    under_weights = metric.resampler(kept)(w)
    for row, value in zip(w, under_weights):
        counts = row.astype(np.int64)
        explicit = _resampled(kept, counts)
        assert value == pytest.approx(metric.value(explicit), rel=1e-5, abs=1e-6)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert value == pytest.approx(SKLEARN_ON[name](explicit), rel=1e-5, abs=1e-6)
