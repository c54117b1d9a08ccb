"""Quantized weights: the layers that run them and the GGUF block codecs.

`layers` holds the fp8 and GGUF linears (dequantised just in time);
`gguf_decode` / `gguf_encode` the block formats (Q4_K, Q8_0, ...). Writing a
quantized file is `weights.quantize` (it needs the weight containers). May
import only the top-level basics (errors, device).
"""

from .gguf_decode import BLOCKS, dequantize
from .gguf_encode import OUR_QUANTIZERS, quantize
from .layers import (
    SHARED,
    Fp8Linear,
    GGUFConv3d,
    GGUFLinear,
    enable_fp8_matmul,
    fp8_matmul_supported,
    scaled_fp8_linear,
    use_fp8_matmul,
)

__all__ = [
    "BLOCKS", "dequantize", "OUR_QUANTIZERS", "quantize", "Fp8Linear", "GGUFLinear", "GGUFConv3d", "SHARED",
    "enable_fp8_matmul", "fp8_matmul_supported", "scaled_fp8_linear", "use_fp8_matmul",
]
