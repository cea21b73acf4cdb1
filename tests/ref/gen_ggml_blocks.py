#!/usr/bin/env python3
"""gen_ggml_blocks.py — writes tests/data/ggml_blocks.bin: random ggml blocks and gguf-py's fp32 decoding.

The reference for test_fq_ggml: blocks of every type fq_ggml_dequant decodes, made of random bytes
(with the fp16 scale fields replaced by sane finite values so the decoded numbers are ordinary), and
the values the independent Python implementation in the `gguf` package (gguf.quants.dequantize)
produces for them. Deterministic (fixed seed); rerun with `python3 tests/ref/gen_ggml_blocks.py`.

Binary layout (all little-endian):
    magic   4 bytes  b"FQGB"
    version uint32   1
    count   uint32   number of entries
    then per entry:
        type     uint32   ggml type id (GGUF numbering)
        n_values uint32   values decoded (a multiple of the type's block size)
        n_bytes  uint32   bytes of encoded blocks that follow
        blocks   n_bytes  raw ggml blocks
        values   n_values float32, gguf-py's dequantization of the blocks
"""
import struct
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

N_BLOCKS = 6  # per quantized type; the plain float types get 256 values

# Byte offsets of the fp16 scale fields inside one block, per type.
FP16_FIELDS = {
    T.Q8_0: [0],
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}


def sane_f16(rng: np.random.Generator) -> bytes:
    """A finite fp16 of either sign with magnitude in [1e-4, 2)."""
    mag = 10.0 ** rng.uniform(-4.0, 0.3)
    return np.float16(mag * rng.choice([-1.0, 1.0])).tobytes()


def quant_blocks(rng: np.random.Generator, qtype: T) -> bytes:
    block_values, block_bytes = GGML_QUANT_SIZES[qtype]
    raw = bytearray(rng.integers(0, 256, size=N_BLOCKS * block_bytes, dtype=np.uint8).tobytes())
    for b in range(N_BLOCKS):
        for off in FP16_FIELDS[qtype]:
            raw[b * block_bytes + off : b * block_bytes + off + 2] = sane_f16(rng)
    return bytes(raw)


def f16_values(rng: np.random.Generator) -> bytes:
    """Random finite halves (normals and subnormals of both signs), plus zeros and infinities."""
    bits = rng.integers(0, 0x10000, size=256, dtype=np.uint32).astype(np.uint16)
    nan = (bits & 0x7C00) == 0x7C00
    bits[nan] &= 0xBFFF  # exponent 31 -> 15: finite
    bits[:6] = [0x0000, 0x8000, 0x7C00, 0xFC00, 0x0001, 0x83FF]
    return bits.tobytes()


def bf16_values(rng: np.random.Generator) -> bytes:
    """Random finite bfloat16 bit patterns, plus zeros, infinities and subnormals."""
    bits = rng.integers(0, 0x10000, size=256, dtype=np.uint32).astype(np.uint16)
    nan = (bits & 0x7F80) == 0x7F80
    bits[nan] &= 0xBFFF  # top exponent bit cleared: finite
    bits[:6] = [0x0000, 0x8000, 0x7F80, 0xFF80, 0x0001, 0x807F]
    return bits.tobytes()


def main() -> int:
    rng = np.random.default_rng(20240611)
    entries = []
    for qtype in FP16_FIELDS:
        entries.append((qtype, quant_blocks(rng, qtype)))
    entries.append((T.F16, f16_values(rng)))
    entries.append((T.BF16, bf16_values(rng)))

    out = bytearray(b"FQGB" + struct.pack("<II", 1, len(entries)))
    for qtype, raw in entries:
        values = dequantize(np.frombuffer(raw, dtype=np.uint8), qtype).astype(np.float32).ravel()
        out += struct.pack("<III", int(qtype), values.size, len(raw))
        out += raw
        out += values.astype("<f4").tobytes()
    dst = Path(__file__).resolve().parent.parent / "data" / "ggml_blocks.bin"
    dst.write_bytes(bytes(out))
    print(f"wrote {dst} ({len(out)} bytes, {len(entries)} entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
