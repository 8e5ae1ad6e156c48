"""SD-GASNet building blocks, one class per paper component."""

from sdgas.nn.modules.backbone import CSA, SRA, DownsamplingStem, LVTBlock, LVTStage, OverlapPatchEmbed
from sdgas.nn.modules.head import SDHead
from sdgas.nn.modules.neck import CS, FGPEM, MFA, BepC3, BiFusion, BottleRep, Inject, PDCTFilter

__all__ = ["CSA", "SRA", "DownsamplingStem", "LVTBlock", "LVTStage", "OverlapPatchEmbed", "SDHead", "CS", "FGPEM",
           "MFA", "BepC3", "BiFusion", "BottleRep", "Inject", "PDCTFilter"]
