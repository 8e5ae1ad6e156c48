from sdgas.models.detect.train import SDGASTrainer
from sdgas.models.detect.val import SDGASValidator

__all__ = ["SDGASTrainer", "SDGASValidator"]
