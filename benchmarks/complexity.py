"""Parameters and GFLOPs of every SD-GASNet YAML variant against the paper (Tables 4 and 7) and the official code.

Counts: parameters as built (training form) and after `fuse()` (RepVGG reparameterized, Conv+BN folded), GFLOPs at
640x640 by ultralytics' own counter (ultralytics-thop, as `model.info()` prints). Official figures are the
authors' code measured with thop 0.1.1 after fusion (docs/official-arch.md §10); the paper's parameter figures sit about
1 M below what that code builds.

    python benchmarks/complexity.py [--nc 6] [--out docs/complexity]   # writes complexity.json and complexity.md
"""

import argparse
import copy
import json
import platform
from pathlib import Path

import sdgas  # noqa: F401  (offline defaults before ultralytics)
from ultralytics.utils.torch_utils import get_flops

from sdgas.nn.tasks import SDGASDetectionModel

# name: (yaml, paper params M, paper GFLOPs, official params M, official GFLOPs (thop 0.1.1), paper table)
VARIANTS = {
    "baseline": ("sdgasnet-baseline.yaml", 5.45, 16.65, 6.17, 15.55, "Table 4"),
    "FIGA only": ("sdgasnet-figa.yaml", 5.99, 18.32, 6.71, 17.36, "Table 4"),
    "CS only": ("sdgasnet-cs.yaml", 6.24, 17.78, 7.40, 17.88, "Table 4"),
    "SD-GASNet (AES-FPN)": ("sdgasnet.yaml", 6.97, 19.41, 7.97, 19.79, "Tables 4, 7"),
    "FPN": ("sdgasnet-fpn.yaml", 10.87, 25.3, 11.80, 25.59, "Table 7"),
    "PAFPN": ("sdgasnet-pafpn.yaml", 5.58, 15.58, 6.55, 15.78, "Table 7"),
}
OFFICIAL_ULTRALYTICS_GFLOPS = 21.47  # official build counted with ultralytics-thop (ultralytics-integration / issue 2)


def measure(yaml_name: str, nc: int) -> dict:
    model = SDGASDetectionModel(yaml_name, nc=nc, verbose=False)
    params = sum(p.numel() for p in model.parameters())
    gflops = get_flops(model, 640)
    fused = copy.deepcopy(model).fuse(verbose=False)
    return {"params_M": params / 1e6, "fused_params_M": sum(p.numel() for p in fused.parameters()) / 1e6,
            "gflops_640": gflops}


def main(nc: int, out: Path):
    rows = []
    for name, (yaml_name, p_params, p_gflops, o_params, o_gflops, table) in VARIANTS.items():
        m = measure(yaml_name, nc)
        rows.append({"variant": name, "yaml": yaml_name, "paper_table": table, **m, "paper_params_M": p_params,
                     "paper_gflops": p_gflops, "official_params_M": o_params, "official_gflops_thop011": o_gflops})
    result = {"nc": nc, "imgsz": 640, "counter": "ultralytics-thop via ultralytics.utils.torch_utils.get_flops",
              "official_sdgasnet_gflops_ultralytics_counter": OFFICIAL_ULTRALYTICS_GFLOPS,
              "python": platform.python_version(), "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = ["| variant | paper table | params M (built) | params M (fused) | GFLOPs@640 | paper params M | paper GFLOPs |"
             " official params M (fused) | official GFLOPs (thop 0.1.1) |", "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['paper_table']} | {r['params_M']:.2f} | {r['fused_params_M']:.2f} | "
                     f"{r['gflops_640']:.2f} | {r['paper_params_M']:.2f} | {r['paper_gflops']:.2f} | "
                     f"{r['official_params_M']:.2f} | {r['official_gflops_thop011']:.2f} |")
    table = "\n".join(lines)
    header = (f"# Model complexity (nc={nc}, 640x640)\n\nProduced by `python benchmarks/complexity.py`; raw data in "
              f"`{out.with_suffix('.json').name}`. GFLOPs by ultralytics' counter, on which the official SD-GASNet build "
              f"measures {OFFICIAL_ULTRALYTICS_GFLOPS} (19.8 under thop 0.1.1, the paper's convention).\n\n")
    out.with_suffix(".md").write_text(header + table + "\n")
    print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nc", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "complexity")
    args = parser.parse_args()
    main(args.nc, args.out)
