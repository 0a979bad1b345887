#!/usr/bin/env python3
"""check_safetensors.py - reads the PEFT adapters that io_writer wrote with
lora_rite_io.h, using only Python's json and struct and numpy (a reader we
did not write), and compares every value with the writer's float inputs.

    check_safetensors.py OUTDIR

OUTDIR is io_writer's: reference.txt, values.bin and peft_f32/, peft_f16/,
peft_bf16/ (adapter_model.safetensors and adapter_config.json each).

For each file it checks the safetensors format as the safetensors library
reads it: an 8-byte little-endian header length, a UTF-8 JSON object header
without duplicate keys, __metadata__ a map of strings, every other key a
tensor with dtype, shape and data_offsets, the offsets tiling the data
section from 0 to its end; then exactly the tensors
base_model.model.<module>.lora_A.weight (r x in) and .lora_B.weight
(out x r) of every module, and every value bit for bit: F32 the input
itself, F16 numpy's float32 -> float16 conversion (round to nearest even),
BF16 the input's top 16 bits rounded to nearest even. adapter_config.json:
peft_type LORA, r, lora_alpha, base_model_name_or_path, task_type, and
target_modules that select exactly the modules (PEFT matches a target
against the whole module name or a "."-separated suffix of it).

Exits 0 when everything matches, 1 otherwise (each problem on stderr)."""
import json
import os
import struct
import sys

try:
    import numpy as np
except ImportError:
    sys.stderr.write("check_safetensors.py: numpy is missing (Debian: python3-numpy; ./run tests installs it)\n")
    sys.exit(1)

PROBLEMS = []


def problem(msg):
    PROBLEMS.append(msg)
    sys.stderr.write("check_safetensors.py: " + msg + "\n")


def no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError("duplicate key %r" % k)
        d[k] = v
    return d


def read_reference(outdir):
    info, modules = {}, []
    with open(os.path.join(outdir, "reference.txt"), encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "module":
                peft, gguf, n_in, n_out, r = parts[1], parts[2], int(parts[3]), int(parts[4]), int(parts[5])
                modules.append({"peft": peft, "gguf": gguf, "in": n_in, "out": n_out, "r": r})
            else:
                info[parts[0]] = line.strip().split(" ", 1)[1]
    values = np.fromfile(os.path.join(outdir, "values.bin"), dtype="<f4")
    at = 0
    for m in modules:
        na, nb = m["r"] * m["in"], m["out"] * m["r"]
        m["A"] = values[at:at + na].reshape(m["r"], m["in"])
        m["B"] = values[at + na:at + na + nb].reshape(m["out"], m["r"])
        at += na + nb
    if at != values.size:
        problem("values.bin holds %d floats, the modules %d" % (values.size, at))
    return info, modules


DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2}


def expected_bits(x, dtype):
    """The bits each float32 of x must be written as."""
    x = np.ascontiguousarray(x, dtype="<f4")
    if dtype == "F32":
        return x.view("<u4")
    if dtype == "F16":
        with np.errstate(over="raise"):
            return x.astype("<f2").view("<u2")
    bits = x.view("<u4").astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype("<u2")


def as_float(raw, dtype):
    if dtype == "F32":
        return raw.view("<f4")
    if dtype == "F16":
        return raw.view("<f2").astype(np.float32)
    return (raw.astype(np.uint32) << 16).view("<f4")


def check_safetensors(path, dtype, modules):
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        problem("%s: %d bytes" % (path, len(blob)))
        return 0
    (hlen,) = struct.unpack("<Q", blob[:8])
    if hlen > len(blob) - 8:
        problem("%s: header length %d past the file (%d bytes)" % (path, hlen, len(blob)))
        return 0
    raw_header = blob[8:8 + hlen]
    if not raw_header.startswith(b"{"):
        problem("%s: the header does not start with '{'" % path)
    try:
        header = json.loads(raw_header.decode("utf-8"), object_pairs_hook=no_duplicates)
    except ValueError as e:
        problem("%s: header: %s" % (path, e))
        return 0
    if not isinstance(header, dict):
        problem("%s: the header is not an object" % path)
        return 0
    data = blob[8 + hlen:]
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        problem("%s: __metadata__ is not a map of strings: %r" % (path, meta))
    # the tensors: well-formed, and their offsets tile the data
    spans = []
    for name, t in header.items():
        if not isinstance(t, dict) or set(t) != {"dtype", "shape", "data_offsets"}:
            problem("%s: %s: not a tensor entry: %r" % (path, name, t))
            continue
        shape, offs = t["shape"], t["data_offsets"]
        if (not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
                or not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)):
            problem("%s: %s: bad shape or data_offsets" % (path, name))
            continue
        count = 1
        for d in shape:
            count *= d
        if t["dtype"] not in DTYPE_SIZE or offs[1] - offs[0] != count * DTYPE_SIZE[t["dtype"]]:
            problem("%s: %s: %s %r in %d bytes" % (path, name, t["dtype"], shape, offs[1] - offs[0]))
        spans.append((offs[0], offs[1], name))
    spans.sort()
    at = 0
    for begin, end, name in spans:
        if begin != at:
            problem("%s: %s starts at %d, the data before it ends at %d" % (path, name, begin, at))
        at = max(at, end)
    if at != len(data):
        problem("%s: the tensors end at %d, the data at %d" % (path, at, len(data)))
    # exactly the modules' tensors, and every value
    want = {}
    for m in modules:
        want["base_model.model.%s.lora_A.weight" % m["peft"]] = m["A"]
        want["base_model.model.%s.lora_B.weight" % m["peft"]] = m["B"]
    if set(header) != set(want):
        problem("%s: tensors %s, expected %s" % (path, sorted(header), sorted(want)))
    compared = 0
    for name, x in want.items():
        t = header.get(name)
        if t is None:
            continue
        if t["dtype"] != dtype or t["shape"] != list(x.shape):
            problem("%s: %s is %s %r, expected %s %r" % (path, name, t["dtype"], t["shape"], dtype, list(x.shape)))
            continue
        begin, end = t["data_offsets"]
        if end > len(data):
            continue
        raw = np.frombuffer(data[begin:end], dtype="<u4" if dtype == "F32" else "<u2").reshape(x.shape)
        exp = expected_bits(x, dtype).reshape(x.shape)
        bad = np.argwhere(raw != exp)
        for idx in bad[:5]:
            i = tuple(idx)
            problem("%s: %s%s: written 0x%x, expected 0x%x (input %r)" % (path, name, list(i), int(raw[i]),
                                                                            int(exp[i]), float(x[i])))
        if len(bad) > 5:
            problem("%s: %s: %d values differ in all" % (path, name, len(bad)))
        vals = as_float(raw, dtype)
        if not np.all(np.isfinite(vals)):
            problem("%s: %s holds NaN or Inf" % (path, name))
        compared += raw.size
    return compared


def peft_targets(name, target):
    return name == target or name.endswith("." + target)


def check_config(path, info, modules):
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.loads(f.read(), object_pairs_hook=no_duplicates)
    except ValueError as e:
        problem("%s: %s" % (path, e))
        return
    if not isinstance(cfg, dict):
        problem("%s: not an object" % path)
        return
    if cfg.get("peft_type") != "LORA":
        problem("%s: peft_type %r" % (path, cfg.get("peft_type")))
    r = cfg.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r != modules[0]["r"]:
        problem("%s: r %r, expected %d" % (path, r, modules[0]["r"]))
    alpha = cfg.get("lora_alpha")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha != float(info["alpha"]):
        problem("%s: lora_alpha %r, expected %s" % (path, alpha, info["alpha"]))
    if cfg.get("base_model_name_or_path") != info["base_model"]:
        problem("%s: base_model_name_or_path %r" % (path, cfg.get("base_model_name_or_path")))
    if cfg.get("task_type") != info["task_type"]:
        problem("%s: task_type %r" % (path, cfg.get("task_type")))
    targets = cfg.get("target_modules")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        problem("%s: target_modules %r" % (path, targets))
        return
    names = [m["peft"] for m in modules]
    for n in names:
        if not any(peft_targets(n, t) for t in targets):
            problem("%s: module %s is in no target_modules entry %r" % (path, n, targets))
    for t in targets:
        if not any(peft_targets(n, t) for n in names):
            problem("%s: target %r selects no module" % (path, t))


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: check_safetensors.py OUTDIR\n")
        return 2
    outdir = sys.argv[1]
    info, modules = read_reference(outdir)
    total = 0
    for dtype, sub in (("F32", "peft_f32"), ("F16", "peft_f16"), ("BF16", "peft_bf16")):
        d = os.path.join(outdir, sub)
        total += check_safetensors(os.path.join(d, "adapter_model.safetensors"), dtype, modules)
        check_config(os.path.join(d, "adapter_config.json"), info, modules)
    if PROBLEMS:
        print("check_safetensors.py: %d problems (numpy %s)" % (len(PROBLEMS), np.__version__))
        return 1
    print("check_safetensors.py: %d values in 3 files equal, configs right (numpy %s)" % (total, np.__version__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
