#!/usr/bin/env python3
# A 4-layer tiny Qwen2 model for the pipeline-stage tests (tests/bats/pipeline_cpu.bats):
# the untied-qkvo golden model's two layers, then the same two again with their
# weights scaled by 0.9 (so no two layers are equal), so that 2, 3 and 4 stages can
# be cut. Standard library only: a safetensors file is an 8-byte header length,
# a JSON header and the raw tensors.
# usage: python3 tests/golden/make_pipeline_model.py SRC_MODEL_DIR OUT_DIR
import json, os, struct, sys, array

src, out = sys.argv[1], sys.argv[2]
raw = open(os.path.join(src, "model.safetensors"), "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
body = raw[8 + n:]
tensors = {}
for name, t in hdr.items():
    if name == "__metadata__":
        continue
    assert t["dtype"] == "F32", t["dtype"]
    a, b = t["data_offsets"]
    tensors[name] = (t["shape"], body[a:b])
for name in list(tensors):
    if name.startswith("model.layers.") and name.split(".")[2] in ("0", "1"):
        i = int(name.split(".")[2])
        shape, data = tensors[name]
        v = array.array("f")
        v.frombytes(data)
        scaled = array.array("f", (x * 0.9 for x in v))
        tensors[name.replace(f"model.layers.{i}.", f"model.layers.{i + 2}.", 1)] = (shape, scaled.tobytes())
os.makedirs(out, exist_ok=True)
header, off, blobs = {}, 0, []
for name in sorted(tensors):
    shape, data = tensors[name]
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(data)]}
    blobs.append(data)
    off += len(data)
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(os.path.join(out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
cfg = json.load(open(os.path.join(src, "config.json")))
cfg["num_hidden_layers"] = 4
if "layer_types" in cfg:
    cfg["layer_types"] = ["full_attention"] * 4
json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
