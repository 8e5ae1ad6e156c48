"""Inspection metrics: what a production line asks of a detector, beside mAP.

- **FROC** (free-response ROC): defect recall against false calls per image as the confidence threshold falls. A
  detection is a hit when it matches a labelled defect of its class at IoU >= 0.5 (ultralytics' one-to-one matching),
  else a false call. `recall_at_false_calls` reads the curve at 0.1, 0.5, 1 and 2 false calls per image, overall and
  per class.
- **Escape and overkill rates** (image level, at a confidence): a defective image (one with labels) escapes when
  nothing is called on it; a defect-free image (an empty label file) is overkilled when anything is called on it.
  `conf_for_escape_rate` finds the highest confidence whose escape rate meets a target.
- **Per-class thresholds**: `class_thresholds` picks, per class, the highest confidence that keeps that class's recall
  at a target; sdgas saves them with the model and `sdgas predict` applies them unless `conf=` is given.

Inputs are ultralytics' per-image validation stats: `conf` (n,), `pred_cls` (n,), `tp` (n, 10) hits at IoU
0.5:0.95, `target_cls` (m,).
"""

from __future__ import annotations

import math

import numpy as np

FALSE_CALL_RATES = (0.1, 0.5, 1.0, 2.0)  # false calls per image at which defect recall is reported


def hits_and_scores(images: list, cls: int | None = None) -> tuple:
    """(confidences, hit flags, labelled defects) pooled over images, for one class or all."""
    conf = [im["conf"] if cls is None else im["conf"][im["pred_cls"] == cls] for im in images]
    hit = [im["tp"][:, 0] if cls is None else im["tp"][im["pred_cls"] == cls, 0] for im in images]
    n_gt = sum(len(im["target_cls"]) if cls is None else int((im["target_cls"] == cls).sum()) for im in images)
    return np.concatenate(conf or [np.zeros(0)]), np.concatenate(hit or [np.zeros(0, bool)]).astype(bool), n_gt


def froc(images: list, cls: int | None = None) -> tuple:
    """(thresholds, false calls per image, recall) at every distinct confidence, highest first."""
    conf, hit, n_gt = hits_and_scores(images, cls)
    order = np.argsort(-conf, kind="stable")
    conf, hit = conf[order], hit[order]
    last = np.r_[conf[1:] != conf[:-1], True] if len(conf) else np.zeros(0, bool)  # one point per distinct score
    false_calls = np.cumsum(~hit)[last] / max(len(images), 1)
    recall = np.cumsum(hit)[last] / n_gt if n_gt else np.full(last.sum(), math.nan)
    return conf[last], false_calls, recall


def recall_at_false_calls(images: list, rates=FALSE_CALL_RATES, cls: int | None = None) -> dict:
    """{rate: the highest recall reached with at most `rate` false calls per image}; nan without labelled defects."""
    _, false_calls, recall = froc(images, cls)
    if not hits_and_scores(images, cls)[2]:
        return dict.fromkeys(rates, math.nan)
    return {rate: float(recall[false_calls <= rate + 1e-12].max(initial=0.0)) for rate in rates}


def image_max_conf(im: dict, class_conf: dict | None = None) -> float:
    """The confidence of an image's strongest call (-1 without any); with per-class thresholds, calls under their
    class's threshold do not count."""
    keep = np.array([c >= (class_conf or {}).get(int(k), 0.0) for c, k in zip(im["conf"], im["pred_cls"])], bool)
    return float(im["conf"][keep].max()) if keep.any() else -1.0


def image_rates(images: list, conf: float, class_conf: dict | None = None) -> dict:
    """Escape rate over defective images and overkill rate over defect-free images at `conf` (nan where none)."""
    strongest = np.array([image_max_conf(im, class_conf) for im in images])
    defective = np.array([len(im["target_cls"]) > 0 for im in images], bool)
    called = strongest >= conf
    return {"escape_rate": float((~called[defective]).mean()) if defective.any() else math.nan,
            "overkill_rate": float(called[~defective].mean()) if (~defective).any() else math.nan,
            "defective_images": int(defective.sum()), "good_images": int((~defective).sum())}


def conf_for_escape_rate(images: list, target: float) -> float:
    """The highest confidence at which at most `target` of the defective images escape; nan where no confidence
    does (too many defective images without any call) or there are none."""
    strongest = np.sort([image_max_conf(im) for im in images if len(im["target_cls"])])
    allowed = math.floor(target * len(strongest) + 1e-9)  # escapes the target tolerates
    conf = float(strongest[min(allowed, len(strongest) - 1)]) if len(strongest) else math.nan
    return conf if conf >= 0 else math.nan


def class_thresholds(images: list, recall: float, nc: int) -> dict:
    """{class: the highest confidence keeping that class's recall >= `recall`}; classes without labels are left out.

    Where the target cannot be met at any confidence, the class gets the confidence of its last hit (its best recall).
    """
    out = {}
    for c in range(nc):
        conf, hit, n_gt = hits_and_scores(images, c)
        if not n_gt:
            continue
        hit_conf = np.sort(conf[hit])[::-1]
        needed = math.ceil(recall * n_gt - 1e-9)
        if len(hit_conf):
            out[c] = float(hit_conf[min(needed, len(hit_conf)) - 1]) if needed else float(hit_conf[0])
    return out


def inspection_report(images: list, names: dict, conf: float, escape_target: float, class_conf=None) -> dict:
    """Everything `sdgas val` prints and saves: FROC points overall and per class, image-level rates."""
    report = {"recall_at_false_calls": {str(k): v for k, v in recall_at_false_calls(images).items()},
              "per_class": {names[c]: {str(k): v for k, v in recall_at_false_calls(images, cls=c).items()}
                            for c in sorted(names) if hits_and_scores(images, c)[2]},
              "conf": conf, **image_rates(images, conf, class_conf)}
    if report["good_images"]:
        report["escape_target"] = escape_target
        report["conf_for_escape_target"] = conf_for_escape_rate(images, escape_target)
        at = report["conf_for_escape_target"]
        report["overkill_at_that_conf"] = math.nan if math.isnan(at) else image_rates(images, at)["overkill_rate"]
    return report


def plot_froc(images: list, names: dict, file) -> None:
    """FROC curves, overall and per class, as ultralytics plots its PR curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 1, figsize=(9, 6), tight_layout=True)
    for c in sorted(names):
        if hits_and_scores(images, c)[2]:
            _, fc, r = froc(images, c)
            ax.plot(fc, r, linewidth=1, label=names[c])
    _, fc, r = froc(images)
    ax.plot(fc, r, linewidth=3, color="blue", label="all classes")
    ax.set(xlabel="False calls per image", ylabel="Defect recall (IoU 0.5)", xlim=(0, max(FALSE_CALL_RATES) * 2),
           ylim=(0, 1), title="FROC")
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    fig.savefig(file, dpi=250)
    plt.close(fig)
