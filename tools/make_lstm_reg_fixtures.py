#!/usr/bin/env python3
"""Parity fixtures for LSTM_reg: builds the regularized BiLSTM exactly as hedwig's reg_lstm module
does it (embedding -> packed (Bi)LSTM -> pad -> ReLU -> max-pool over time -> dropout ->
[fc1 -> ReLU] -> fc2, parameter names embed.weight, lstm.*, fc1.*, fc2.*) with random weights,
runs it in eval mode on ragged inputs, and writes for each case:

  <case>/config.json        hedwig's fields
  <case>/weights.safetensors  the state_dict (F64 or F32)
  <case>/inputs.safetensors   input_ids [B,T] I64, lengths [B] I64, labels [B] I64
  <case>/expected.safetensors logits, loss (mean cross entropy) and grads/<name> for every weight

Checked by tests/test_models_lstm_reg.cpp through `txtcls forward`.
    python3 tools/make_lstm_reg_fixtures.py tests/fixtures/lstm_reg
"""
import json, os, sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file


class RegLSTMReference(nn.Module):
    """hedwig's RegLSTM forward pass (eval mode: the dropouts are identities)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg["words_num"], cfg["words_dim"])
        self.lstm = nn.LSTM(cfg["words_dim"], cfg["hidden_dim"], num_layers=cfg["num_layers"],
                            bidirectional=cfg["bidirectional"], batch_first=True, dropout=cfg["dropout"])
        width = cfg["hidden_dim"] * (2 if cfg["bidirectional"] else 1)
        if cfg["bottleneck_layer"]:
            mid = cfg["hidden_dim"] if cfg["bidirectional"] else cfg["hidden_dim"] // 2
            self.fc1 = nn.Linear(width, mid)
            self.fc2 = nn.Linear(mid, cfg["target_class"])
        else:
            self.fc1 = nn.Linear(width, cfg["target_class"])

    def forward(self, ids, lengths):
        if self.cfg["embed_droprate"]:
            # hedwig looks words up through its embedded_dropout() whenever embed_droprate is set
            # (with rate 0 in eval mode), passing padding_idx=-1, which F.embedding reads as the
            # last row: that row gets no gradient.
            x = F.embedding(ids, self.embed.weight, padding_idx=-1)
        else:
            x = self.embed(ids)
        x = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(x)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
        x = F.relu(out.transpose(1, 2))
        x = F.max_pool1d(x, x.size(2)).squeeze(2)
        if self.cfg["bottleneck_layer"]:
            return self.fc2(F.relu(self.fc1(x)))
        return self.fc1(x)


CASES = {
    "bilstm_1layer": dict(num_layers=1, bidirectional=True, bottleneck_layer=False),
    "bilstm_2layer_bottleneck": dict(num_layers=2, bidirectional=True, bottleneck_layer=True),
    "lstm_1layer_bottleneck": dict(num_layers=1, bidirectional=False, bottleneck_layer=True),
    "lstm_2layer": dict(num_layers=2, bidirectional=False, bottleneck_layer=False, embed_droprate=0.0),
}


def make_case(root, name, overrides, dtype, seed):
    torch.manual_seed(seed)
    cfg = dict(words_num=23, words_dim=5, hidden_dim=4, target_class=3, dropout=0.5, wdrop=0.1,
               embed_droprate=0.2, beta_ema=0.99, mode="rand")
    cfg.update(overrides)
    model = RegLSTMReference(cfg).to(dtype)
    with torch.no_grad():  # spread the weights so that every gate is exercised
        for p in model.parameters():
            p.uniform_(-0.6, 0.6)
    model.eval()
    B, T = 4, 7
    lengths = torch.tensor([7, 3, 5, 1])
    ids = torch.randint(1, cfg["words_num"], (B, T))
    ids[0, 1] = ids[2, 4] = cfg["words_num"] - 1  # the last row: see forward()
    for b in range(B):
        ids[b, lengths[b]:] = 0  # padding id; its values must not matter
    labels = torch.tensor([0, 2, 1, 2])
    logits = model(ids, lengths)
    loss = F.cross_entropy(logits, labels)
    loss.backward()

    d = os.path.join(root, f"{name}_{'f64' if dtype == torch.float64 else 'f32'}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1, sort_keys=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(d, "weights.safetensors"))
    save_file({"input_ids": ids, "lengths": lengths, "labels": labels}, os.path.join(d, "inputs.safetensors"))
    expected = {"logits": logits.detach(), "loss": loss.detach().reshape(())}
    for k, p in model.named_parameters():
        expected["grads/" + k] = p.grad.detach().contiguous()
    save_file(expected, os.path.join(d, "expected.safetensors"))


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/lstm_reg"
    for i, (name, ov) in enumerate(sorted(CASES.items())):
        for dtype in (torch.float64, torch.float32):
            make_case(root, name, ov, dtype, seed=100 + i)
    print("wrote", root)


if __name__ == "__main__":
    main()
