#!/usr/bin/env python3
"""Writes tests/fixtures/bpt/bpt_graphs.json: the BP-Transformer graphs that the authors' own
graph builder produces for small (n, k), for tests/test_attention_bpt.cpp to compare with
txtcls::nn::bpt_sequence_edges / build_bpt_graph edge for edge.

Usage: python3 tools/make_bpt_fixtures.py BPT_CHECKOUT [output_dir]

BPT_CHECKOUT is a checkout (or `git archive` export) of the authors' repository
(yzh119/BPT on GitHub). Nothing of it is copied into this project and nothing is reimplemented
here: the graph construction lives in the Cython module graph_builder/builder.pyx
(class BinaryPartition), which depends only on numpy. This script compiles that file as it is,
at run time, into a temporary directory (Cython + numpy + a C++ compiler:
`pip install cython numpy`), imports it and records what it returns. The rest of their code
(graph/*.py, modules/*.py) needs DGL, PyTorch and torchtext and is not touched; batching there
only concatenates per-sequence graphs with node-id offsets, which the C++ test checks itself.

Per case the fixture holds BinaryPartition(length=n, triu, step=k, clip_dist) as returned:
number_of_nodes, number_of_levels, get_pos() and get_edges() as three lists src, dst, etype in the
builder's order (an edge src -> dst means node dst attends to node src).
"""
import importlib
import json
import os
import sys
import tempfile

# (n, k, triu, clip_dist). k is the builder's `step`; clip_dist 10 is its default.
CASES = (
    [(n, k, False, 10) for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 16, 17, 31, 33, 50) for k in (1, 2, 4)]
    + [(n, k, True, 10) for n in (1, 5, 8, 13, 33) for k in (1, 2, 4)]
    + [(n, k, False, clip) for n in (13, 33) for k in (1, 2) for clip in (0, 1, 2)]
    + [(40, 3, False, 10), (64, 2, False, 10), (64, 2, True, 10)]
)


def build_graphbuilder(checkout, work):
    """Compiles checkout/graph_builder/builder.pyx into `work` and returns the imported module."""
    import numpy
    from Cython.Build import cythonize
    from setuptools import Extension
    from setuptools.dist import Distribution

    pyx = os.path.join(checkout, "graph_builder", "builder.pyx")
    if not os.path.isfile(pyx):
        sys.exit(f"make_bpt_fixtures: {pyx} not found; pass the root of a checkout of the BPT repository")
    ext = Extension("graphbuilder", [pyx], language="c++", include_dirs=[numpy.get_include()],
                    extra_compile_args=["-O1", "-w"])
    # build_dir keeps the generated C++ out of the checkout; language_level 2 is what the Cython of
    # the authors' time assumed for a file without a directive.
    modules = cythonize([ext], build_dir=work, quiet=True, compiler_directives={"language_level": 2})
    dist = Distribution({"ext_modules": modules, "script_args": ["build_ext"]})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = work
    cmd.build_temp = os.path.join(work, "tmp")
    dist.run_command("build_ext")
    sys.path.insert(0, work)
    return importlib.import_module("graphbuilder")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    checkout = os.path.abspath(sys.argv[1])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "tests", "fixtures", "bpt")
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        gb = build_graphbuilder(checkout, work)
        lines = []
        for n, k, triu, clip in CASES:
            g = gb.BinaryPartition(n, triu, k, clip)
            src, dst, etype = g.get_edges()
            case = {
                "n": n, "k": k, "triu": triu, "clip_dist": clip,
                "number_of_nodes": int(g.number_of_nodes), "number_of_levels": int(g.number_of_levels),
                "pos": [int(x) for x in g.get_pos()],
                "src": [int(x) for x in src], "dst": [int(x) for x in dst], "etype": [int(x) for x in etype],
            }
            lines.append(json.dumps(case, separators=(",", ":")))
    path = os.path.join(out_dir, "bpt_graphs.json")
    with open(path, "w") as f:
        f.write('{"source":"BinaryPartition(length, triu, step, clip_dist) of graph_builder/builder.pyx, '
                'BPT reference code","cases":[\n')
        f.write(",\n".join(lines))
        f.write("\n]}\n")
    print(f"wrote {path}: {len(lines)} cases, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
