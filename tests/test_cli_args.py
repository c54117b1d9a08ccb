"""Every bad argument of `generate`: exit code 2, one line on stderr, nothing loaded, no existing file touched."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import uniworld_core.__main__ as cli
from uniworld_core.media import load_image, read_webp


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file whose header claims width x height (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture
def files(tmp_path):
    """Bad and good input files, and an existing output file that must survive every refusal."""
    out = tmp_path / "existing.webp"
    out.write_bytes(b"an earlier video")
    (tmp_path / "random.safetensors").write_bytes(bytes(range(256)) * 8)
    save_file({"features": torch.zeros(1, 4, 8)}, str(tmp_path / "no_context.safetensors"))
    save_file({"context": torch.zeros(4, 8)}, str(tmp_path / "flat_context.safetensors"))
    (tmp_path / "a_file").write_text("not a folder")
    _png_header_only(tmp_path / "bomb.png", 20000, 20000)
    (tmp_path / "dit.safetensors").write_bytes(b"placeholder")
    return tmp_path


BAD = {  # flags -> what the one line must say
    "steps 0": (["--steps", "0"], "--steps 0; expected 1 to 1000"),
    "fps 0": (["--fps", "0"], "--fps 0; expected 1 to 240"),
    "fps negative": (["--fps", "-16"], "--fps -16; expected 1 to 240"),
    "frames huge": (["--frames", "100001"], "--frames 100001; expected 5 to 4097"),
    "frames 1": (["--frames", "1"], "--frames 1; expected 5 to 4097"),
    "frames not 4k+1": (["--frames", "18"], "--frames 18; expected a frame count of the form 4k+1"),
    "width huge": (["--width", "20000"], "--width 20000; expected 16 to 4096"),
    "width not /16": (["--width", "100"], "--width 100; expected a multiple of 16"),
    "cfg negative": (["--cfg", "-2"], "--cfg -2; expected 1 to 30"),
    "shift 0": (["--shift", "0"], "--shift 0; expected 0.1 to 50"),
    "shift negative": (["--shift", "-1"], "--shift -1; expected 0.1 to 50"),
    "fourier ratio 2": (["--fourier-ratio", "2"], "--fourier-ratio 2; expected 0 to 1"),
    "fourier ratio negative": (["--fourier-ratio", "-0.1"], "--fourier-ratio -0.1; expected 0 to 1"),
    "style strength": (["--style-strength", "3"], "--style-strength 3; expected 0 to 1"),
    "seed negative": (["--seed", "-1"], "--seed -1; expected 0 to"),
    "unknown style": (["--style", "baroque"], "--style baroque; expected one of"),
    "too big to sample": (["--width", "4096", "--height", "4096", "--frames", "1025", "--run-frames", "1025"],
                          "GiB available"),
    "continuation window too big": (["--width", "4096", "--height", "4096", "--frames", "1025", "--new-frames", "64",
                                     "--context-frames", "64"], "GiB available"),
    "run frames not 4k+1": (["--run-frames", "18"], "--run-frames 18; expected a frame count of the form 4k+1"),
    "long video with vae tiles": (["--frames", "33", "--vae-tile", "16"], "with --vae-tile"),
    "out png": (["--out", "{tmp}/video.png"], "a .webp or .mp4 file name"),
    "out under a file": (["--out", "{tmp}/a_file/video.webp"], "which is a file"),
    "context random bytes": (["--context", "{tmp}/random.safetensors", "--dit", "{tmp}/dit.safetensors",
                              "--vae", "{tmp}/dit.safetensors"], "could not be read as safetensors"),
    "context without context": (["--context", "{tmp}/no_context.safetensors", "--dit", "{tmp}/dit.safetensors",
                                 "--vae", "{tmp}/dit.safetensors"], "no 'context' tensor"),
    "context of the wrong shape": (["--context", "{tmp}/flat_context.safetensors", "--dit",
                                    "{tmp}/dit.safetensors", "--vae", "{tmp}/dit.safetensors"], "of shape (4, 8)"),
    "context missing": (["--context", "{tmp}/nope.safetensors"], "does not exist"),
    "image missing": (["--image", "{tmp}/nope.png"], "--image {tmp}/nope.png, which does not exist"),
    "image bomb": (["--image", "{tmp}/bomb.png"], "megapixels"),
    "image not an image": (["--image", "{tmp}/a_file"], "could not be read as an image"),
    "device unknown": (["--device", "tpu"], "--device tpu; expected one of"),
    "dit without vae": (["--dit", "{tmp}/dit.safetensors"], "--dit without --vae"),
    "dit without text encoder": (["--dit", "{tmp}/dit.safetensors", "--vae", "{tmp}/dit.safetensors"],
                                 "--dit without a text encoder"),
    "vlm without adapter": (["--vlm", "{tmp}/dit.safetensors"], "--vlm and --adapter apart"),
    "precision unknown": (["--precision", "fp64"], "argument --precision: invalid choice"),
    "steps not a number": (["--steps", "ten"], "argument --steps: invalid int value"),
    "blocks to swap": (["--blocks-to-swap", "-5"], "--blocks-to-swap -5; expected -1 to 1000"),
    "sequence parallel in one process": (["--sequence-parallel", "2"], "--sequence-parallel 2 in a single process; "
                                         "expected a launch by torchrun"),
    "sequence parallel 0": (["--sequence-parallel", "0"], "--sequence-parallel 0; expected 1 to 1024"),
    "cfg parallel without guidance": (["--cfg-parallel", "--cfg", "1"], "--cfg-parallel with --cfg 1"),
    "fsdp with block swap": (["--fsdp", "--blocks-to-swap", "2"], "--fsdp with --blocks-to-swap/--vram-budget"),
    "cfg parallel with a cache": (["--cfg-parallel", "--cache", "wan"], "--cfg-parallel with --cache; expected one"),
    "vae tile inside its overlap": (["--vae-tile", "8"], "--vae-tile 8; expected 0 (whole frames) or more than"),
    "dist timeout 0": (["--dist-timeout", "0"], "--dist-timeout 0; expected 1 to 86400"),
}
# Refused under torchrun's variables (process 0 of WORLD_SIZE), before any process group or model
BAD_LAUNCHED = {
    "processes without parallel options": ("2", [], "a launch of 2 processes without --sequence-parallel"),
    "process count of another layout": ("3", ["--sequence-parallel", "2", "--cfg-parallel"],
                                        "3 processes for --sequence-parallel 2 --cfg-parallel; expected exactly 4"),
    "a numbered device": ("2", ["--sequence-parallel", "2", "--device", "cpu:0"],
                          "--device cpu:0 with several processes"),
}
if not torch.cuda.is_available():
    BAD["device cuda without CUDA"] = (["--device", "cuda"], "--device cuda on a machine without CUDA")


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_argument_is_one_line_exit_2_and_nothing_happens(case, files, capsys, monkeypatch):
    _refused(*BAD[case], files, capsys, monkeypatch)


@pytest.mark.parametrize("case", sorted(BAD_LAUNCHED))
def test_bad_parallel_launch_is_one_line_exit_2_and_nothing_happens(case, files, capsys, monkeypatch):
    world, flags, message = BAD_LAUNCHED[case]
    for name, value in (("WORLD_SIZE", world), ("RANK", "0"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cli, "start_parallel", lambda *a, **k: pytest.fail("a process group was started"))
    _refused(flags, message, files, capsys, monkeypatch)


def _refused(flags, message, files, capsys, monkeypatch):
    flags = [f.replace("{tmp}", str(files)) for f in flags]
    message = message.replace("{tmp}", str(files))

    def must_not_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    for name in ("load", "tiny_stack"):
        monkeypatch.setattr(cli, name, must_not_load)
    monkeypatch.setattr(cli.miniature, "load_miniature", must_not_load)
    out = files / "existing.webp"
    argv = ["generate", "--out", str(out), *flags] if "--out" not in flags else ["generate", *flags]
    if "argument --" in message:  # argparse's own errors exit
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
    else:
        assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err, err
    assert out.read_bytes() == b"an earlier video"


def test_out_as_an_existing_folder_writes_inside_it(tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    assert cli.main(["generate", "--preset", "tiny", "--steps", "1", "--frames", "5", "--out", str(folder)]) == 0
    assert read_webp(folder / "uniworld.webp").shape[0] == 5
    assert not (tmp_path / "videos.webp").exists()


def test_an_image_without_a_prompt_is_said_aloud(tmp_path, capsys):
    from uniworld_core.presets import miniature

    if not miniature.available():
        pytest.skip("the miniature model is not installed")
    image = miniature.examples()[0]["image"]
    assert cli.main(["generate", "--image", image, "--steps", "1", "--frames", "5",
                     "--out", str(tmp_path / "v.webp")]) == 0
    assert "no --prompt given" in capsys.readouterr().out


def test_sixteen_bit_png_keeps_its_range(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 48).reshape(32, 48).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    image = load_image(tmp_path / "grey16.png")
    assert image.shape == (32, 48, 3)
    assert image.min() == 0 and image.max() == 1 and abs(image.mean().item() - 0.5) < 0.01  # not all white


def test_version_and_help_say_each_models_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.startswith("uniworld-osp2 ")
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "832 for real weights" in text and "49 for real weights" in text and "50 for real weights" in text
    from uniworld_core.presets import miniature

    mini = miniature.defaults()
    assert f"{mini.width} for the miniature" in text and f"{mini.steps} for the miniature" in text


def test_fp8_matmul_says_when_no_layer_can_use_it(tmp_path, capsys):
    """The tiny preset has no fp8 weights: the run goes on as usual and says so."""
    assert cli.main(["generate", "--preset", "tiny", "--steps", "1", "--frames", "5", "--fp8-matmul",
                     "--out", str(tmp_path / "v.webp")]) == 0
    assert "fp8 matmul: no layer can use it here" in capsys.readouterr().out
