"""SDGASValidator: ultralytics' DetectionValidator plus the paper's COCO metrics (AP, AP50, AP75, APs, APm, APl)."""

from ultralytics.models.yolo.detect import DetectionValidator


class SDGASValidator(DetectionValidator):
    """DetectionValidator for SD-GASNet models."""
