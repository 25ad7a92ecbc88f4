#!/usr/bin/env python3
"""Writes tests/fixtures/lstm/lstm_cases.json: reference outputs and gradients of torch.nn.LSTM
(batch_first, ragged lengths through pack_padded_sequence) in float64, for the parity tests of
txtcls's LSTM op and module.

Each case holds the module configuration, the input x [B, T, I], the lengths, every parameter
under PyTorch's name, a random weight tensor w_out shaped like the output, the expected output
(padded with zeros up to T) and the gradients of sum(output * w_out) with respect to x, every
parameter and, when given, the initial states h0/c0.

Usage: python3 tools/make_lstm_fixtures.py [output_dir]
"""
import json
import os
import sys

import torch

CASES = [
    # name, I, H, layers, bidirectional, bias, lengths (any order), T, initial state
    ("uni_1layer", 4, 3, 1, False, True, [3, 5, 1], 5, False),
    ("bi_1layer", 4, 3, 1, True, True, [2, 5, 4], 5, False),
    ("uni_2layer", 3, 3, 2, False, True, [4, 4, 1], 5, False),
    ("bi_2layer", 4, 2, 2, True, True, [5, 1, 3], 5, False),
    ("bi_full_lengths", 2, 3, 1, True, True, [4, 4], 4, False),
    ("uni_no_bias", 3, 2, 1, False, False, [2, 3, 3], 4, False),
    ("uni_initial_state", 4, 3, 1, False, True, [5, 2, 4], 5, True),
    ("bi_padded_tail", 3, 2, 1, True, True, [1, 3], 5, False),  # T exceeds every length
]


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def tensor_entry(t):
    return {"shape": list(t.shape), "data": flat(t)}


def make_case(name, I, H, layers, bidir, bias, lengths, T, with_state, gen):
    B = len(lengths)
    dirs = 2 if bidir else 1
    lstm = torch.nn.LSTM(I, H, num_layers=layers, bias=bias, batch_first=True, bidirectional=bidir).double()
    with torch.no_grad():
        for p in lstm.parameters():
            p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64) * 1.6 - 0.8)
    x = (torch.rand(B, T, I, generator=gen, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    lens = torch.tensor(lengths, dtype=torch.int64)
    state = None
    if with_state:
        h0 = (torch.rand(layers * dirs, B, H, generator=gen, dtype=torch.float64) - 0.5).requires_grad_(True)
        c0 = (torch.rand(layers * dirs, B, H, generator=gen, dtype=torch.float64) - 0.5).requires_grad_(True)
        state = (h0, c0)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
    out_packed, _ = lstm(packed, state)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out_packed, batch_first=True, total_length=T)
    w_out = torch.rand(out.shape, generator=gen, dtype=torch.float64) * 2 - 1
    (out * w_out).sum().backward()

    case = {
        "name": name, "input_size": I, "hidden_size": H, "num_layers": layers, "bidirectional": bidir,
        "bias": bias, "lengths": lengths, "x": tensor_entry(x), "w_out": tensor_entry(w_out),
        "output": tensor_entry(out),
        "params": {n: tensor_entry(p) for n, p in lstm.named_parameters()},
        "grads": {n: tensor_entry(p.grad) for n, p in lstm.named_parameters()},
    }
    case["grads"]["x"] = tensor_entry(x.grad)
    if with_state:
        case["h0"] = tensor_entry(state[0])
        case["c0"] = tensor_entry(state[1])
        case["grads"]["h0"] = tensor_entry(state[0].grad)
        case["grads"]["c0"] = tensor_entry(state[1].grad)
    return case


def main():
    root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests", "fixtures", "lstm")
    os.makedirs(out_dir, exist_ok=True)
    gen = torch.Generator().manual_seed(20190602)
    cases = [make_case(*c, gen) for c in CASES]
    path = os.path.join(out_dir, "lstm_cases.json")
    with open(path, "w") as f:
        json.dump({"generator": "tools/make_lstm_fixtures.py", "torch": torch.__version__, "cases": cases}, f)
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
