#!/usr/bin/env python3
"""Writes the safetensors fixtures that tests/test_io_safetensors.cpp reads.

Each tests/fixtures/safetensors/<name>.safetensors is written by the reference implementation
(the `safetensors` package, through torch) and comes with <name>.json describing what a reader
must find:

    {"metadata": {key: value},
     "tensors": [{"name": ..., "dtype": "F32", "shape": [...], "values": [...row-major...],
                  "bits": [...],      # F16/BF16 only: the stored 16-bit patterns
                  "source": "name"},  # optional: an F32 tensor of the same file that was rounded
                 ...]}                 # in file order (order of the data offsets)

Floats are JSON numbers (exact: every value is a double printed with round-trip precision);
non-finite values are the strings "nan", "inf" and "-inf". The same format is what
tools/check_safetensors_interop.py checks, so files written by txtcls are described alike.

Usage: python3 tools/make_safetensors_fixtures.py [OUTPUT_DIR]
"""
import json
import math
import os
import struct
import sys

import torch
from safetensors.torch import save_file

DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def json_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def describe(t):
    """The expected-values entry of one tensor (without its name)."""
    d = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape)}
    flat = t.reshape(-1)
    if t.is_floating_point():
        d["values"] = [json_value(float(x)) for x in flat.to(torch.float64).tolist()]
    elif t.dtype == torch.bool:
        d["values"] = [bool(x) for x in flat.tolist()]
    else:
        d["values"] = [int(x) for x in flat.tolist()]
    if t.dtype in (torch.float16, torch.bfloat16):
        d["bits"] = [int(x) & 0xFFFF for x in flat.view(torch.int16).tolist()]
    return d


def file_order(path):
    """Tensor names in the order of their bytes, read from the header the library wrote."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return [k for k, _ in sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"]))]


def write_fixture(out_dir, name, tensors, metadata=None, sources=None):
    path = os.path.join(out_dir, name + ".safetensors")
    save_file(tensors, path, metadata=metadata)
    entries = []
    for tname in file_order(path):
        e = {"name": tname, **describe(tensors[tname])}
        if sources and tname in sources:
            e["source"] = sources[tname]
        entries.append(e)
    # One tensor a line: small, and diffs stay readable.
    dump = lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    lines = "".join("\n " + dump(e) + ("," if i + 1 < len(entries) else "\n") for i, e in enumerate(entries))
    with open(os.path.join(out_dir, name + ".json"), "w", encoding="utf-8") as f:
        f.write('{"metadata":' + dump(metadata or {}) + ',\n"tensors":[' + lines + "]}\n")


def rounding_cases(fmt):
    """float32 inputs that probe round-to-nearest-even when narrowed to fmt ('f16' or 'bf16')."""
    g = torch.Generator().manual_seed(7)
    if fmt == "f16":
        ulp1, max_finite, min_sub = 2.0 ** -10, 65504.0, 2.0 ** -24
        special = [
            1 + ulp1 / 2,          # tie between 1 and the next value: to even (1)
            1 + 3 * ulp1 / 2,      # tie: to even (up)
            1 + ulp1 / 2 + 2.0 ** -20,  # just above a tie: up
            min_sub / 2,           # tie between 0 and the smallest subnormal: to even (0)
            3 * min_sub / 2,       # tie between two subnormals: to even (up)
            min_sub * 0.75,
            2.0 ** -14 - min_sub / 2,  # rounds up into the smallest normal
            max_finite, 65519.0, 65520.0, 1e6, -1e6,  # 65520 is the tie to infinity
            2.0 ** -30,  # underflows to zero
        ]
    else:
        ulp1, max_finite, min_sub = 2.0 ** -7, 3.3895313892515355e38, 2.0 ** -133
        special = [
            1 + ulp1 / 2, 1 + 3 * ulp1 / 2, 1 + ulp1 / 2 + 2.0 ** -20,
            min_sub / 2, 3 * min_sub / 2, 2.0 ** -126 - min_sub / 2,
            max_finite, 3.3961775292304425e38,  # just below the tie to infinity
            3.4028234663852886e38,  # float max: rounds to infinity
            1e-45,
        ]
    special += [0.0, -0.0, float("inf"), float("-inf"), float("nan"), -2.5, 1.0 / 3.0]
    rand = (torch.randn(24, generator=g) * 100).tolist()
    return torch.tensor(special + rand, dtype=torch.float32)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "safetensors")
    os.makedirs(out_dir, exist_ok=True)

    f16_src = rounding_cases("f16")
    bf16_src = rounding_cases("bf16")
    i64 = torch.tensor([-(2 ** 63), 2 ** 63 - 1, 0, -1, 123456789012345], dtype=torch.int64)
    write_fixture(out_dir, "dtypes", {
        "f64": torch.tensor([[1.5, -0.0, 1e300], [5e-324, float("-inf"), float("nan")]], dtype=torch.float64),
        "f32": torch.tensor([[0.1, -2.0], [3.4028234663852886e38, 1.401298464324817e-45]], dtype=torch.float32),
        "f16_source": f16_src,
        "f16": f16_src.to(torch.float16),
        "bf16_source": bf16_src,
        "bf16": bf16_src.to(torch.bfloat16),
        "i64": i64,
        "i32": torch.tensor([[-(2 ** 31), 2 ** 31 - 1], [7, -7]], dtype=torch.int32),
        "i16": torch.tensor([-(2 ** 15), 2 ** 15 - 1, 300], dtype=torch.int16),
        "i8": torch.tensor([-128, 127, -1, 0], dtype=torch.int8).reshape(2, 2, 1),
        "u8": torch.tensor([0, 255, 7], dtype=torch.uint8),
        "bool": torch.tensor([[True, False, True], [False, False, True]]),
    }, sources={"f16": "f16_source", "bf16": "bf16_source"})

    write_fixture(out_dir, "scalar", {
        "pi": torch.tensor(3.25, dtype=torch.float32),
        "step": torch.tensor(42, dtype=torch.int64),
    })

    write_fixture(out_dir, "empty", {
        "no_rows": torch.zeros(0, 4, dtype=torch.float32),
        "nothing": torch.zeros(0, dtype=torch.int64),
        "middle_zero": torch.zeros(3, 0, 2, dtype=torch.float16),
        "values": torch.tensor([1.0, -1.0], dtype=torch.float32),
    })

    write_fixture(out_dir, "metadata", {
        "emb.wörter": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4,
    }, metadata={"format": "pt", "note": "héllo ✓ \"quoted\"", "empty": "", "lines": "a\nb"})

    many = {}
    for i in range(40):
        shape = (i % 3 + 1, i % 2 + 1)
        n = shape[0] * shape[1]
        dt = [torch.float32, torch.float64, torch.int32][i % 3]
        many[f"layer.{i}.weight"] = (torch.arange(n, dtype=torch.float64) * (i + 1) - 5).to(dt).reshape(shape)
    write_fixture(out_dir, "many", many, metadata={"tensors": "40"})

    write_fixture(out_dir, "no_tensors", {}, metadata={"only": "metadata"})


if __name__ == "__main__":
    main()
