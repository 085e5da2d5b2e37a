# Naive reference for docs/PERF.md: what a Python user would write to turn token
# JSONL into a flat uint32 token file plus per-sample lengths (no batch index).
import json, sys, numpy as np
lens = []
with open(sys.argv[1]) as f, open(sys.argv[2], "wb") as out:
    for line in f:
        d = json.loads(line)
        np.asarray(d["input_ids"], dtype=np.uint32).tofile(out)
        lens.append(len(d["input_ids"]))
np.asarray(lens, dtype=np.uint32).tofile(sys.argv[2] + ".len")
