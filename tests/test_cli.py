"""The `sdgas` command: argument parsing, validation and one-line failures with non-zero exit codes."""

import subprocess
import sys

import pytest

from sdgas.cli import check_arguments, main, parse_overrides


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sdgas.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_key_value_parsing_types_values():
    overrides = parse_overrides(["epochs=3", "imgsz", "=", "256", "lr0=0.002", "cls_loss=bce", "rect", "name=exp"])
    assert overrides == {"epochs": 3, "imgsz": 256, "lr0": 0.002, "cls_loss": "bce", "rect": True, "name": "exp"}


def test_typo_gets_suggestion():
    with pytest.raises(SyntaxError, match="'epoch' is not a valid YOLO argument.*epochs"):
        check_arguments({"epoch": 3})


def test_sdgas_keys_are_validated_and_type_checked():
    check_arguments({"cls_loss": "vfl", "tal_topk": 13, "box": 2.5})
    with pytest.raises(SyntaxError, match="tal_topk"):
        check_arguments({"tal_topc": 13})
    with pytest.raises(TypeError, match="box"):
        check_arguments({"box": "big"})


def test_version_and_help(capsys):
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["help"]) == 0
    assert "sdgas train" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["train", "epoch=3"], "'epoch' is not a valid YOLO argument"),
    (["predict", "model=missing.pt"], "model file 'missing.pt' not found"),
    (["train", "data=missing.yaml", "epochs=1"], "dataset YAML 'missing.yaml' not found"),
    (["train", "model=missing.yaml"], "model YAML 'missing.yaml' not found"),
    (["trian"], "unknown mode 'trian'"),
    (["val"], "needs model="),
    (["export"], "needs model="),
    (["benchmark", "device=gpu"], "Invalid CUDA 'device=gpu' requested"),
])
def test_failures_exit_non_zero_with_one_line(args, message, tmp_path):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("sdgas: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr


def test_predict_saves_annotated_images_by_default(tmp_path):
    """Like `yolo predict`, `sdgas predict` writes annotated images (here of the demo set, no source= given)."""
    result = run_cli("predict", "model=sdgasnet.yaml", "imgsz=64", f"project={tmp_path}", "name=pred", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "pred").glob("*.jpg"))) == 12


def test_only_sdgas_keys_are_stripped_for_stock_modes():
    """Stock validators/predictors/exporters get every ultralytics key, including the loss gains sdgas re-defaults."""
    from sdgas.utils import strip_sdgas_keys

    args = {"box": 7.5, "cls": 0.5, "dfl": 1.5, "conf": 0.2, "kd_t": 30.0, "tile": 200}
    assert strip_sdgas_keys(args, keep=("tile",)) == {"box": 7.5, "cls": 0.5, "dfl": 1.5, "conf": 0.2, "tile": 200}
    assert "kd_t" in args  # a copy: the caller's arguments are untouched
