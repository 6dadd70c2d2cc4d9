"""Every built-in metric, declared by four things (docs/metrics.md):
(a) the per-sample statistics it needs (runner/metrics/tasks.py keeps them),
(b) how they aggregate into its value, (c) its direction, (d) its paired-test family:
- "mcnemar": a per-sample 0/1 (exact McNemar, a sign test on the discordant samples);
- "additive": a per-sample value whose mean is the metric (a paired sign-flip permutation test);
- "bootstrap": not decomposable into a per-sample mean (a paired bootstrap on shared resamples);
- "dense": a ratio of sums over images (pixel accuracy): the paired sign-flip test on each
  image's own value (`paired`), the interval and MDE from the paired bootstrap of the ratio.

Each metric computes its value under sample weights `w` of shape [B, n] (a bootstrap
resample is a row of counts), so one matrix product gives it for thousands of resamples at
once, and the SAME rows serve every model: that is what makes the bootstrap paired.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from compare.errors import ReportError, did_you_mean
from compare.metrics import heads
from compare.metrics import dense

ECE_BINS = 15  # equal-width confidence bins (Guo et al. 2017)


@dataclass(frozen=True)
class Kept:
    """What evaluation kept for one model on one split: per-sample statistics and targets."""

    stats: dict[str, np.ndarray]
    target: np.ndarray
    width: int | None  # classes, labels or outputs

    def __len__(self) -> int:
        return len(self.target)

    @classmethod
    def of(cls, kept: dict, width: int | None, target=None) -> "Kept":
        """From an epoch's statistics as evaluation keeps them (CPU tensors, `target` among
        them unless given)."""
        target = kept["target"] if target is None else target
        return cls({k: v.numpy() for k, v in kept.items() if k != "target"}, target.numpy(), width)


Weighted = Callable[[np.ndarray], np.ndarray]  # w [B, n] -> the metric under each row of weights


@dataclass(frozen=True)
class Metric:
    name: str
    tasks: tuple[str, ...]
    needs: tuple[str, ...]
    higher: bool
    family: str  # mcnemar | additive | bootstrap
    definition: str
    per_sample: Callable[[Kept], np.ndarray] | None = None  # mcnemar, additive: the value is the (weighted) mean
    finish: Callable[[np.ndarray], np.ndarray] | None = None  # applied to that mean (rmse: sqrt)
    features: Callable[[Kept], np.ndarray] | None = None  # [n, K] summed by the weights...
    from_sums: Callable[[np.ndarray, Kept], np.ndarray] | None = None  # ...then [B, K] -> [B]
    weighted: Callable[[Kept, np.ndarray], np.ndarray] | None = None  # anything else (AUROC, AP)
    bounds: tuple[float, float] = (-math.inf, math.inf)  # the values it can take: an interval over seeds is clipped to them
    paired: Callable[[Kept], np.ndarray] | None = None  # "dense": each sample's own value, what the sign-flip test pairs

    def resampler(self, kept: Kept, dtype=np.float32) -> Weighted:
        """The metric as a function of sample weights (computed per sample once); resamples
        use float32 sums (exact for counts below 2^24), a single value float64."""
        with np.errstate(all="ignore"):
            if self.per_sample is not None:
                x = self.per_sample(kept).astype(np.float64)
                finish = self.finish or (lambda v: v)
                return lambda w: finish((w @ x) / w.sum(axis=1))
            if self.features is not None:
                f = self.features(kept).astype(dtype)
                return lambda w: _quiet(self.from_sums, w.astype(f.dtype) @ f, kept)
        return lambda w: _quiet(self.weighted, kept, w)

    def value(self, kept: Kept) -> float:
        if not len(kept):
            return math.nan
        return float(self.resampler(kept, np.float64)(np.ones((1, len(kept))))[0])


def _quiet(fn, *args):
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN row: NaN, as meant
        return fn(*args)


# ---------------------------------------------------------------- single-label classification

def _onehot(index: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((len(index), width), dtype=np.float64)
    out[np.arange(len(index)), index.astype(np.int64)] = 1.0
    return out


def _class_counts(k: Kept) -> np.ndarray:
    """[n, 3C]: true-positive, predicted and true indicators per class (top-1)."""
    t, p = _onehot(k.target, k.width), _onehot(k.stats["top1"], k.width)
    return np.concatenate([t * p, p, t], axis=1)


def _f1_parts(s: np.ndarray, k: Kept) -> tuple[np.ndarray, np.ndarray]:
    c = k.width
    tp, pred, true = s[:, :c], s[:, c : 2 * c], s[:, 2 * c :]
    return 2 * tp / (pred + true), true  # NaN where a class neither occurs nor is predicted


def _macro_f1(s, k):
    return np.nanmean(_f1_parts(s, k)[0], axis=1)  # sklearn: the labels present in targets or predictions


def _weighted_f1(s, k):
    f1, true = _f1_parts(s, k)
    return np.nansum(f1 * true, axis=1) / true.sum(axis=1)


def _balanced(s, k):
    c = k.width
    return np.nanmean(s[:, :c] / s[:, 2 * c :], axis=1)  # recall over the classes that occur


def _ece_features(k: Kept) -> np.ndarray:
    conf = k.stats["p_max"].astype(np.float64)
    # bin b holds confidences in (b/15, (b+1)/15]; bin 0 also holds 0
    b = np.clip(np.ceil(conf * ECE_BINS).astype(np.int64) - 1, 0, ECE_BINS - 1)
    onehot = _onehot(b, ECE_BINS)
    correct = (k.stats["top1"] == k.target).astype(np.float64)
    return np.concatenate([onehot, onehot * conf[:, None], onehot * correct[:, None]], axis=1)


def _ece(s, k):
    n = s[:, :ECE_BINS].sum(axis=1)
    return np.abs(s[:, 2 * ECE_BINS :] - s[:, ECE_BINS : 2 * ECE_BINS]).sum(axis=1) / n


def _top_k(kk: int):
    return lambda k: (k.stats["top"][:, :kk] == k.target[:, None]).any(axis=1).astype(np.float64)


# ---------------------------------------------------------------- ranking metrics (binary, multi-label)

def _groups(score: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-score if descending else score, kind="stable")
    s = score[order]
    return order, np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # starts of runs of tied scores


def auroc_w(score: np.ndarray, positive: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Area under the ROC curve under weights w [B, n]: P(score of a positive > a negative's),
    ties counting half (the Mann-Whitney form sklearn's roc_auc_score equals)."""
    order, starts = _groups(score, descending=False)
    pos = positive[order].astype(bool)
    wo = w[:, order]
    wp, wn = np.add.reduceat(wo * pos, starts, axis=1), np.add.reduceat(wo * ~pos, starts, axis=1)
    below = np.cumsum(wn, axis=1) - wn
    return (wp * (below + 0.5 * wn)).sum(axis=1) / (wp.sum(axis=1) * wn.sum(axis=1))


def average_precision_w(score: np.ndarray, positive: np.ndarray, w: np.ndarray) -> np.ndarray:
    """sum_k (R_k - R_k-1) P_k over the distinct thresholds, high to low (sklearn's
    average_precision_score: no interpolation), under weights w [B, n]."""
    order, starts = _groups(score, descending=True)
    pos = positive[order].astype(bool)
    wo = w[:, order]
    wp, wn = np.add.reduceat(wo * pos, starts, axis=1), np.add.reduceat(wo * ~pos, starts, axis=1)
    tp, fp = np.cumsum(wp, axis=1), np.cumsum(wn, axis=1)
    seen = tp + fp  # 0 above the first threshold a resample drew: no step there, so no 0/0 (NaN * 0 is NaN)
    precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
    return (wp * precision).sum(axis=1) / tp[:, -1]


def _mean_ap(k: Kept, w: np.ndarray) -> np.ndarray:
    t, s = k.target.reshape(len(k), -1), k.stats["score"]
    per_label = [average_precision_w(s[:, j], t[:, j] > 0.5, w) for j in range(t.shape[1]) if (t[:, j] > 0.5).any()]
    return np.nanmean(np.stack(per_label), axis=0) if per_label else np.full(len(w), math.nan)


# ---------------------------------------------------------------- multi-label

def _ml(k: Kept) -> tuple[np.ndarray, np.ndarray]:
    """(truth, decision) as booleans [n, L]: a label is predicted where its score is >= 0.5."""
    return k.target.reshape(len(k), -1) > 0.5, k.stats["score"] >= 0.5


def _ml_counts(k: Kept) -> np.ndarray:
    t, p = _ml(k)
    return np.concatenate([t & p, ~t & p, t & ~p], axis=1).astype(np.float64)  # tp, fp, fn per label


def _ml_micro_f1(s, k):
    width = s.shape[1] // 3
    tp, fp, fn = s[:, :width].sum(1), s[:, width : 2 * width].sum(1), s[:, 2 * width :].sum(1)
    return 2 * tp / (2 * tp + fp + fn)


def _ml_macro_f1(s, k):
    width = s.shape[1] // 3
    tp, fp, fn = s[:, :width], s[:, width : 2 * width], s[:, 2 * width :]
    f1 = 2 * tp / (2 * tp + fp + fn)
    return np.nan_to_num(f1, nan=0.0).mean(axis=1)  # sklearn: an ill-defined label scores 0 (zero_division)


# ---------------------------------------------------------------- regression

def _errors(k: Kept) -> np.ndarray:
    return k.stats["pred"].reshape(len(k), -1).astype(np.float64) - k.target.reshape(len(k), -1).astype(np.float64)


def _r2_features(k: Kept) -> np.ndarray:
    y = k.target.reshape(len(k), -1).astype(np.float64)
    return np.concatenate([_errors(k) ** 2, y, y * y, np.ones((len(k), 1))], axis=1)


def _r2(s, k):
    width = (s.shape[1] - 1) // 3
    sse, sy, syy, n = s[:, :width], s[:, width : 2 * width], s[:, 2 * width : 3 * width], s[:, -1:]
    sst = syy - sy * sy / n
    r2 = 1 - sse / sst
    r2 = np.where(sst > 1e-12 * np.maximum(syy, 1e-300), r2, np.where(sse == 0, 1.0, 0.0))  # sklearn's force_finite
    return r2.mean(axis=1)


HEADLINE = "acc"  # the metric the engine counts for every run with classes, and ranks a classification by


def split_column(split: str, metric: str = HEADLINE) -> str:
    """A metric's history.csv column on a split: split_column("test") is test_acc."""
    return f"{split}_{metric}"


VAL_HEADLINE, TEST_HEADLINE = split_column("val"), split_column("test")  # val_acc, test_acc


CLS, ML, REG, DENSE = ("classification",), ("multilabel",), ("regression",), ("dense",)
UNIT = (0.0, 1.0)  # a share, a rate, an F1, an area
BUILTIN: list[Metric] = [
    Metric(HEADLINE, CLS, ("top1",), True, "mcnemar", "share of samples whose top-1 class is the target",
           per_sample=lambda k: (k.stats["top1"] == k.target).astype(np.float64), bounds=UNIT),
    *[Metric(f"top{kk}_acc", CLS, ("top",), True, "mcnemar", f"share of samples whose target is among the {kk} highest logits",
             per_sample=_top_k(kk), bounds=UNIT) for kk in range(2, 6)],
    Metric("balanced_acc", CLS, ("top1",), True, "bootstrap", "mean recall over the classes that occur in the targets",
           features=_class_counts, from_sums=_balanced, bounds=UNIT),
    Metric("macro_f1", CLS, ("top1",), True, "bootstrap", "unweighted mean F1 over the classes in the targets or the predictions",
           features=_class_counts, from_sums=_macro_f1, bounds=UNIT),
    Metric("weighted_f1", CLS, ("top1",), True, "bootstrap", "mean F1 over classes weighted by their number of targets",
           features=_class_counts, from_sums=_weighted_f1, bounds=UNIT),
    Metric("nll", CLS, ("p_true",), False, "additive", "mean -log p(target) under the softmax",
           per_sample=lambda k: -np.log(np.clip(k.stats["p_true"].astype(np.float64), 1e-12, None)), bounds=(0.0, math.inf)),
    Metric("brier", CLS, ("p_true", "p_sq"), False, "additive", "mean over samples of sum_c (p_c - [c = target])^2 (Brier 1950; 2x sklearn's binary brier_score_loss)",
           per_sample=lambda k: k.stats["p_sq"].astype(np.float64) - 2 * k.stats["p_true"].astype(np.float64) + 1, bounds=(0.0, 2.0)),
    Metric("ece", CLS, ("p_max", "top1"), False, "bootstrap", f"expected calibration error: {ECE_BINS} equal-width bins of top-1 confidence, sum_b (n_b / n) |acc_b - conf_b|",
           features=_ece_features, from_sums=_ece, bounds=UNIT),
    Metric("auroc", ("binary",), ("p_pos",), True, "bootstrap", "area under the ROC curve of p(class 1), ties counted half",
           weighted=lambda k, w: auroc_w(k.stats["p_pos"], k.target == 1, w), bounds=UNIT),
    Metric("average_precision", ("binary",), ("p_pos",), True, "bootstrap", "area under the precision-recall curve of p(class 1), step-wise (sklearn)",
           weighted=lambda k, w: average_precision_w(k.stats["p_pos"], k.target == 1, w), bounds=UNIT),
    Metric("subset_acc", ML, ("score",), True, "mcnemar", "share of samples with every label right (score >= 0.5)",
           per_sample=lambda k: np.all(np.equal(*_ml(k)), axis=1).astype(np.float64), bounds=UNIT),
    Metric("hamming", ML, ("score",), False, "additive", "share of wrong labels (Hamming loss)",
           per_sample=lambda k: np.not_equal(*_ml(k)).mean(axis=1), bounds=UNIT),
    Metric("micro_f1", ML, ("score",), True, "bootstrap", "F1 of the label decisions pooled over labels",
           features=_ml_counts, from_sums=_ml_micro_f1, bounds=UNIT),
    Metric("macro_f1", ML, ("score",), True, "bootstrap", "unweighted mean F1 over labels (an ill-defined label scores 0)",
           features=_ml_counts, from_sums=_ml_macro_f1, bounds=UNIT),
    Metric("map", ML, ("score",), True, "bootstrap", "mean average precision over the labels with a positive sample",
           weighted=_mean_ap, bounds=UNIT),
    Metric("mse", REG, ("pred",), False, "additive", "mean squared error (averaged over outputs)",
           per_sample=lambda k: (_errors(k) ** 2).mean(axis=1), bounds=(0.0, math.inf)),
    Metric("rmse", REG, ("pred",), False, "additive", "square root of the mse (its test: the mse's, the same ordering)",
           per_sample=lambda k: (_errors(k) ** 2).mean(axis=1), finish=np.sqrt, bounds=(0.0, math.inf)),
    Metric("mae", REG, ("pred",), False, "additive", "mean absolute error (averaged over outputs)",
           per_sample=lambda k: np.abs(_errors(k)).mean(axis=1), bounds=(0.0, math.inf)),
    Metric("r2", REG, ("pred",), True, "bootstrap", "coefficient of determination, averaged over outputs (sklearn's uniform_average)",
           features=_r2_features, from_sums=_r2, bounds=(-math.inf, 1.0)),
    # dense (runner/metrics/dense.py): from per-image, per-class pixel counts; ignore_index is never counted
    Metric("pixel_acc", DENSE, dense.STATS, True, "dense", "share of counted pixels whose top-1 class is the target, pooled over images",
           features=dense.features, from_sums=dense.pixel_acc, paired=dense.image_acc, bounds=UNIT),
    Metric("mean_acc", DENSE, dense.STATS, True, "bootstrap", "mean over the classes in the truth of their pixel recall (pooled over images)",
           features=dense.features, from_sums=dense.mean_acc, bounds=UNIT),
    Metric("miou", DENSE, dense.STATS, True, "bootstrap", "mean over classes of pooled intersection / pooled union (a class in neither truth nor prediction left out)",
           features=dense.features, from_sums=dense.miou, bounds=UNIT),
    Metric("dice", DENSE, dense.STATS, True, "bootstrap", "mean over classes of 2 |truth and prediction| / (|truth| + |prediction|), pooled over images",
           features=dense.features, from_sums=dense.dice, bounds=UNIT),
]

HEAD_LOSS = Metric("loss", ("heads",), ("loss",), False, "additive", "a head's own loss ([loss.<head>]) per sample (reduction none), averaged",
                   per_sample=lambda k: k.stats["loss"].astype(np.float64))  # `<head>/loss`, where the loss is given per head
DEFAULTS = {  # what history.csv and the leaderboard show when [report] metrics is not set; the first ranks
    "classification": [HEADLINE, "top5_acc", "macro_f1", "nll", "ece"],
    "binary": [HEADLINE, "balanced_acc", "macro_f1", "auroc", "average_precision", "nll", "ece"],
    "multilabel": ["micro_f1", "macro_f1", "subset_acc", "hamming", "map"],
    "regression": ["rmse", "mae", "r2"],
    "dense": ["miou", "pixel_acc", "mean_acc", "dice"],
    "other": [],
}


def task_key(kind: str, width: int | None) -> str:
    return "binary" if kind == "classification" and width == 2 else kind


def metrics_for(kind: str, width: int | None = None) -> dict[str, Metric]:
    """The metrics that apply to a task (binary classification has every classification metric too)."""
    if kind == "heads":  # several heads: each head's metrics, named <head>/<metric>
        return heads.metrics_for(width, metrics_for, HEAD_LOSS)
    key = task_key(kind, width)
    tasks = {key, "classification"} if key == "binary" else {key}
    out = {m.name: m for m in BUILTIN if tasks & set(m.tasks)}
    if kind == "classification" and width is not None:
        out = {n: m for n, m in out.items() if not (n.startswith("top") and int(n[3:-4]) >= width)}
    return out


def defaults(kind: str, width: int | None = None) -> list[str]:
    if kind == "heads":
        return heads.defaults(width, defaults)
    names = metrics_for(kind, width)
    return [m for m in DEFAULTS[task_key(kind, width)] if m in names]


def rank_metric(rank_by: str | None, kind: str, metrics: list[str]) -> str:
    """What a run ranks by: [report] rank_by, else acc for classification, else the task's first
    metric (the loss where the task has none)."""
    rank = rank_by or (HEADLINE if kind == "classification" else metrics[0] if metrics else "loss")
    return rank.removeprefix("test_")


def higher_is_better(name: str, own: bool | None = None) -> bool:
    """THE direction rule, for a metric or any history.csv column: `own`, the direction a
    metric of the user's own declares; else a built-in metric's (any task; `val_`, `test_`,
    `train_` prefixes aside); else higher for an accuracy and for samples_per_s, lower for the
    rest (the loss, times)."""
    if own is not None:
        return own
    bare = _bare(name)
    found = {m.higher for m in BUILTIN if m.name == bare}
    if len(found) == 1:
        return found.pop()
    return bare.endswith("acc") or bare == "samples_per_s"


def value_range(name: str, own: Metric | None = None) -> tuple[float, float]:
    """The values a metric or history.csv column can take, beside `higher_is_better`: `own`'s
    bounds (a metric of the user's own: unbounded unless it declares them); else a built-in
    metric's (by its bare name; one the tasks share, macro_f1, has one range); else an
    accuracy's [0, 1]; else unbounded (the loss, times)."""
    if own is not None:
        return own.bounds
    bare = _bare(name)
    found = {m.bounds for m in BUILTIN if m.name == bare}
    if len(found) == 1:
        return found.pop()
    return UNIT if bare.endswith("acc") else (-math.inf, math.inf)


def _bare(name: str) -> str:
    """A column's metric: split prefix aside, and a head's (`val_digit/acc` -> acc; a head's loss, `loss/digit`, stays)."""
    bare = name.removeprefix("val_").removeprefix("test_").removeprefix("train_")
    return bare if bare.startswith("loss/") else bare.rpartition("/")[2]


def lookup(name: str, kind: str, width: int | None, user: dict[str, Metric] | None = None) -> Metric:
    known = metrics_for(kind, width) | (user or {})
    if name not in known and kind == "heads":
        raise heads.unknown(name, width, list(known))
    if name not in known:
        raise ReportError(f"metric {name!r} does not apply to {kind}{did_you_mean(name, list(known))} (the metrics of this task: {', '.join(known) or 'none'})")
    return known[name]
