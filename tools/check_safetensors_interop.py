#!/usr/bin/env python3
"""Checks that the reference `safetensors` package reads a file as described by a JSON file.

Usage: check_safetensors_interop.py FILE EXPECTED.json [FILE EXPECTED.json ...]

EXPECTED.json has the format written by tools/make_safetensors_fixtures.py: the metadata and,
in file order, every tensor's name, dtype, shape and row-major values (floats exact; "nan",
"inf", "-inf" for non-finite ones; "bits" with the 16-bit patterns of F16/BF16 tensors).
Used by the test suite on files written by txtcls, the other direction of the fixtures.

Exit status: 0 all files match, 1 a mismatch (each one is printed), 2 bad usage or unreadable
EXPECTED.json, 77 when this Python lacks safetensors or torch (the test is then reported as
skipped, not passed).
"""
import json
import math
import struct
import sys

SKIP = 77

try:
    import torch
    from safetensors import safe_open
except ImportError as e:  # the test runner shows this line next to SKIP
    print(f"SKIP: {sys.executable} cannot import safetensors/torch ({e})")
    sys.exit(SKIP)

DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def same_value(got, want):
    if isinstance(want, str):
        if want == "nan":
            return isinstance(got, float) and math.isnan(got)
        return got == (math.inf if want == "inf" else -math.inf)
    if isinstance(want, bool) or isinstance(got, bool):
        return isinstance(got, bool) and isinstance(want, bool) and got == want
    if isinstance(got, float):
        # Exact, and -0.0 must stay -0.0.
        return got == want and math.copysign(1.0, got) == math.copysign(1.0, float(want))
    return isinstance(want, int) and got == want


def header_order(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return [k for k, _ in sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"]))]


def check(path, expected):
    problems = []
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
        names = list(f.keys())
        tensors = {k: f.get_tensor(k) for k in names}
    if metadata != expected["metadata"]:
        problems.append(f"metadata {metadata!r} != expected {expected['metadata']!r}")
    want_names = [e["name"] for e in expected["tensors"]]
    if sorted(names) != sorted(want_names):
        problems.append(f"tensor names {sorted(names)} != expected {sorted(want_names)}")
    order = header_order(path)
    if order != want_names:
        problems.append(f"file order {order} != expected {want_names}")
    for e in expected["tensors"]:
        name = e["name"]
        if name not in tensors:
            continue
        t = tensors[name]
        if DTYPE_NAMES.get(t.dtype) != e["dtype"]:
            problems.append(f"{name}: dtype {t.dtype} != {e['dtype']}")
            continue
        if list(t.shape) != e["shape"]:
            problems.append(f"{name}: shape {list(t.shape)} != {e['shape']}")
            continue
        flat = t.reshape(-1)
        if t.is_floating_point():
            got = flat.to(torch.float64).tolist()
        elif t.dtype == torch.bool:
            got = [bool(x) for x in flat.tolist()]
        else:
            got = [int(x) for x in flat.tolist()]
        want = e["values"]
        if len(got) != len(want):
            problems.append(f"{name}: {len(got)} values, expected {len(want)}")
            continue
        for i, (g, w) in enumerate(zip(got, want)):
            if not same_value(g, w):
                problems.append(f"{name}: element {i} is {g!r}, expected {w!r}")
                break
        if "bits" in e:
            bits = [int(x) & 0xFFFF for x in flat.view(torch.int16).tolist()]
            if bits != e["bits"]:
                problems.append(f"{name}: 16-bit patterns {bits} != expected {e['bits']}")
    return problems


def main(argv):
    if len(argv) < 2 or len(argv) % 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    failed = False
    for path, expected_path in zip(argv[0::2], argv[1::2]):
        try:
            with open(expected_path, encoding="utf-8") as f:
                expected = json.load(f)
        except (OSError, ValueError) as e:
            print(f"{expected_path}: cannot read: {e}", file=sys.stderr)
            return 2
        try:
            problems = check(path, expected)
        except Exception as e:  # the reference refused the file: that is the finding
            problems = [f"safetensors cannot load it: {type(e).__name__}: {e}"]
        for p in problems:
            print(f"{path}: {p}")
        if not problems:
            print(f"{path}: OK ({len(expected['tensors'])} tensors)")
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
