#!/usr/bin/env python3
"""Test accuracy of LSTM_reg (txtcls train, default hyperparameters, no pretrained vectors, fixed
seed) next to fastText (Debian's `fasttext`, -wordNgrams 2, epochs and lr tuned on the same dev
split) on the same train/test splits. Prints a markdown table; each run's metrics stay in --runs.

    python3 bench/accuracy_vs_fasttext.py --data-root ../shared/data --datasets trec mr subj sst2 \
        --txtcls build/bin/txtcls --runs runs/accuracy [--extra "--epochs 10"] [--seeds 3435 1 2]

With several --seeds each seed is one run of both systems (txtcls --seed S: weights, dropout,
batch order and dev split; fastText: -seed S and its dev split shuffled with S), and a last row
gives the mean and standard deviation over the seeds.

fastText sees the text cleaned and lowercased like txtcls's default tokenizer (hedwig's
clean_string) and is tuned over a grid (epochs x lr) on a dev split: the official one when the
dataset has it, else a seeded 10% of train (the rest is what it trains on), as txtcls does.
"""
import argparse, gzip, json, os, random, re, statistics, subprocess, sys, tempfile, time


def clean(text):
    # hedwig's clean_string: keep letters, digits and a few marks, lowercase, split on spaces.
    text = re.sub(r"[^A-Za-z0-9(),!?\'`]", " ", text)
    text = re.sub(r"\s{2,}", " ", text)
    return text.strip().lower()


def read(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [tuple(line.rstrip("\n").split("\t", 1)) for line in f if line.strip()]


def write_ft(rows, path):
    with open(path, "w") as f:
        for label, text in rows:
            f.write(f"__label__{label} {clean(text)}\n")


def ft_accuracy(model, path):
    out = subprocess.run(["fasttext", "test", model, path], check=True, capture_output=True, text=True).stdout
    return float(re.search(r"P@1\s+([0-9.]+)", out).group(1))


def run_fasttext(d, threads, work, seed=3435):
    train = read(os.path.join(d, "train.tsv.gz"))
    test = read(os.path.join(d, "test.tsv.gz"))
    devp = os.path.join(d, "dev.tsv.gz")
    if os.path.exists(devp):
        dev, fit = read(devp), train
    else:
        rows = train[:]
        random.Random(seed).shuffle(rows)
        k = len(rows) // 10
        dev, fit = rows[:k], rows[k:]
    for name, rows in (("fit", fit), ("dev", dev), ("test", test)):
        write_ft(rows, os.path.join(work, name + ".ft"))
    best = None
    t0 = time.time()
    for epoch in (5, 10, 25, 50):
        for lr in (0.1, 0.25, 0.5, 1.0):
            m = os.path.join(work, "m")
            subprocess.run(["fasttext", "supervised", "-input", os.path.join(work, "fit.ft"), "-output", m,
                            "-wordNgrams", "2", "-epoch", str(epoch), "-lr", str(lr), "-thread", str(threads),
                            "-seed", str(seed), "-verbose", "0"], check=True)
            acc = ft_accuracy(m + ".bin", os.path.join(work, "dev.ft"))
            if best is None or acc > best[0]:
                best = (acc, epoch, lr, ft_accuracy(m + ".bin", os.path.join(work, "test.ft")))
    return {"dev_accuracy": best[0], "epoch": best[1], "lr": best[2], "test_accuracy": best[3],
            "tuning_seconds": time.time() - t0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--datasets", nargs="+", default=["trec", "mr", "subj", "sst2"])
    ap.add_argument("--txtcls", default="build/bin/txtcls")
    ap.add_argument("--runs", default="runs/accuracy")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--extra", default="", help="extra txtcls train arguments, e.g. '--epochs 10'")
    ap.add_argument("--seeds", nargs="+", type=int, default=[3435])
    ap.add_argument("--skip-txtcls", action="store_true", help="only (re)run fastText; read txtcls metrics from --runs")
    args = ap.parse_args()
    rows = []
    for ds in args.datasets:
        d = os.path.join(args.data_root, ds)
        for seed in args.seeds:
            out = os.path.join(args.runs, ds if len(args.seeds) == 1 else f"{ds}-seed{seed}")
            if not args.skip_txtcls:
                cmd = [args.txtcls, "train", "--data", d, "--out", out, "--threads", str(args.threads),
                       "--seed", str(seed)] + args.extra.split()
                print("+", " ".join(cmd), file=sys.stderr, flush=True)
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            m = json.load(open(os.path.join(out, "metrics.json")))
            with tempfile.TemporaryDirectory() as work:
                ft = run_fasttext(d, args.threads, work, seed)
            rows.append((ds, seed, m, ft))
            print(f"{ds} seed {seed}: txtcls {m['test']['accuracy']:.4f}  fastText {ft['test_accuracy']:.4f}",
                  file=sys.stderr, flush=True)
    print("| dataset | seed | LSTM_reg test acc | macro-F1 | best epoch / run | train time | fastText test acc | fastText (epoch, lr) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for ds, seed, m, ft in rows:
        print(f"| {ds} | {seed} | {m['test']['accuracy']:.4f} | {m['test']['macro_f1']:.4f} | {m['best_epoch']} / {m['epochs_run']} "
              f"| {m['train_seconds'] / 60:.1f} min | {ft['test_accuracy']:.4f} | ({ft['epoch']}, {ft['lr']}) |")
    if len(args.seeds) > 1:
        for ds in args.datasets:
            ours = [m["test"]["accuracy"] for d_, _, m, _ in rows if d_ == ds]
            theirs = [ft["test_accuracy"] for d_, _, _, ft in rows if d_ == ds]
            print(f"| {ds} | mean ± sd | {statistics.mean(ours):.4f} ± {statistics.stdev(ours):.4f} | | | "
                  f"| {statistics.mean(theirs):.4f} ± {statistics.stdev(theirs):.4f} | |")

if __name__ == "__main__":
    main()
