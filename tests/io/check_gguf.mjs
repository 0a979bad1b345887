// check_gguf.mjs - parses the GGUF adapters that io_writer wrote with
// lora_rite_io.h, using the npm package @huggingface/gguf (a reader we did not
// write), and compares metadata, tensor names, shapes, types and every value
// with the writer's float inputs.
//
//     node check_gguf.mjs NODE_PREFIX OUTDIR
//
// NODE_PREFIX is where `npm install --prefix NODE_PREFIX @huggingface/gguf`
// put the package; OUTDIR is io_writer's (reference.txt, values.bin,
// adapter_f32.gguf, adapter_f16.gguf).
//
// Checked in each file: version 3; general.type "adapter",
// general.architecture, adapter.type "lora" (strings), adapter.lora.alpha (a
// float32); general.alignment, when there, a uint32 of 32; exactly the
// tensors <name>.lora_a and <name>.lora_b of every module, with the package's
// shape (ggml's ne order) [in, r] and [r, out], type F32 (0) or F16 (1),
// offsets multiples of 32. The values are read here from the file at the
// package's tensorDataOffset + offset and compared bit for bit with the
// inputs (F16: rounded to nearest even by the conversion below, written for
// this check on doubles).
//
// Exits 0 when everything matches, 1 otherwise (each problem on stderr).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";

const problems = [];
function problem(msg) {
  problems.push(msg);
  process.stderr.write(`check_gguf.mjs: ${msg}\n`);
}

if (process.argv.length !== 4) {
  process.stderr.write("usage: node check_gguf.mjs NODE_PREFIX OUTDIR\n");
  process.exit(2);
}
const prefix = resolve(process.argv[2]);
const outdir = resolve(process.argv[3]);

let ggufPackage;
try {
  const require = createRequire(join(prefix, "package.json"));
  ggufPackage = require("@huggingface/gguf");
} catch (e) {
  process.stderr.write(`check_gguf.mjs: @huggingface/gguf is not installed in ${prefix}: ${e.message}\n`);
  process.exit(1);
}
const { gguf } = ggufPackage;

// ---- the reference
const info = {};
const modules = [];
for (const line of readFileSync(join(outdir, "reference.txt"), "utf8").split("\n")) {
  const parts = line.trim().split(/\s+/);
  if (parts.length < 2) continue;
  if (parts[0] === "module") {
    modules.push({ peft: parts[1], name: parts[2], in: +parts[3], out: +parts[4], r: +parts[5] });
  } else {
    info[parts[0]] = line.trim().slice(parts[0].length + 1);
  }
}
{
  const buf = readFileSync(join(outdir, "values.bin"));
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let at = 0;
  for (const m of modules) {
    for (const side of ["A", "B"]) {
      const n = side === "A" ? m.r * m.in : m.out * m.r;
      const bits = new Uint32Array(n);
      for (let e = 0; e < n; e++) bits[e] = view.getUint32(4 * (at + e), true);
      m[side] = bits;
      at += n;
    }
  }
  if (at * 4 !== buf.byteLength) problem(`values.bin holds ${buf.byteLength / 4} floats, the modules ${at}`);
}

// ---- float32 bits -> IEEE half bits, round to nearest even, on doubles
function f32FromBits(b) {
  const dv = new DataView(new ArrayBuffer(4));
  dv.setUint32(0, b, true);
  return dv.getFloat32(0, true);
}
function roundEven(q) {
  const f = Math.floor(q);
  const d = q - f;
  return d > 0.5 || (d === 0.5 && f % 2 === 1) ? f + 1 : f;
}
function halfBits(b) {
  const x = f32FromBits(b);
  const sign = b >>> 31 ? 0x8000 : 0;
  const a = Math.abs(x);
  if (Number.isNaN(x)) return sign | 0x7e00;
  if (a === Infinity) return sign | 0x7c00;
  if (a === 0) return sign;
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e -= 1; // log2 rounding
  if (2 ** (e + 1) <= a) e += 1;
  if (e < -14) return sign | roundEven(a * 2 ** 24);
  let q = roundEven(a * 2 ** (10 - e));
  if (q === 2048) {
    q = 1024;
    e += 1;
  }
  if (e > 15) return sign | 0x7c00;
  return sign | ((e + 15) << 10) | (q - 1024);
}

// ---- one file
async function checkFile(file, type) {
  const path = join(outdir, file);
  let parsed;
  try {
    parsed = await gguf(path, { allowLocalFile: true, typedMetadata: true });
  } catch (e) {
    problem(`${file}: @huggingface/gguf refused it: ${e.message}`);
    return 0;
  }
  const { metadata, typedMetadata, tensorInfos, tensorDataOffset, littleEndian } = parsed;
  if (!littleEndian) problem(`${file}: not little-endian`);
  if (metadata.version !== 3) problem(`${file}: version ${metadata.version}`);
  const STRING = 8, F32 = 6, U32 = 4;
  const expectKey = (key, value, t) => {
    const tm = typedMetadata[key];
    if (!tm) return problem(`${file}: no ${key}`);
    if (tm.type !== t) problem(`${file}: ${key} has type ${tm.type}, expected ${t}`);
    if (tm.value !== value) problem(`${file}: ${key} = ${tm.value}, expected ${value}`);
  };
  expectKey("general.type", "adapter", STRING);
  expectKey("general.architecture", info.architecture, STRING);
  expectKey("adapter.type", "lora", STRING);
  expectKey("adapter.lora.alpha", Math.fround(+info.alpha), F32);
  if ("general.alignment" in typedMetadata) expectKey("general.alignment", 32, U32);
  if (Number(metadata.tensor_count) !== 2 * modules.length) {
    problem(`${file}: ${metadata.tensor_count} tensors, expected ${2 * modules.length}`);
  }

  const want = new Map();
  for (const m of modules) {
    want.set(`${m.name}.lora_a`, { shape: [m.in, m.r], bits: m.A });
    want.set(`${m.name}.lora_b`, { shape: [m.r, m.out], bits: m.B });
  }
  const names = tensorInfos.map((t) => t.name);
  if (new Set(names).size !== names.length) problem(`${file}: a tensor name appears twice`);
  for (const n of names) if (!want.has(n)) problem(`${file}: unexpected tensor ${n}`);

  const blob = readFileSync(path);
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  if (tensorDataOffset % 32n !== 0n) problem(`${file}: data section at ${tensorDataOffset}`);
  let compared = 0;
  for (const [name, w] of want) {
    const t = tensorInfos.find((x) => x.name === name);
    if (!t) {
      problem(`${file}: no tensor ${name}`);
      continue;
    }
    const shape = t.shape.map(Number);
    if (t.n_dims !== 2 || shape.length !== 2 || shape[0] !== w.shape[0] || shape[1] !== w.shape[1]) {
      problem(`${file}: ${name} has shape [${shape}], expected [${w.shape}]`);
      continue;
    }
    if (t.dtype !== type) {
      problem(`${file}: ${name} has type ${t.dtype}, expected ${type}`);
      continue;
    }
    if (t.offset % 32n !== 0n) problem(`${file}: ${name} at offset ${t.offset}, not a multiple of 32`);
    const start = Number(tensorDataOffset + t.offset);
    const es = type === 0 ? 4 : 2;
    if (start + w.bits.length * es > blob.byteLength) {
      problem(`${file}: ${name} ends past the file`);
      continue;
    }
    let bad = 0;
    for (let e = 0; e < w.bits.length; e++) {
      const got = type === 0 ? view.getUint32(start + 4 * e, true) : view.getUint16(start + 2 * e, true);
      const exp = type === 0 ? w.bits[e] : halfBits(w.bits[e]);
      if (got !== exp) {
        if (bad++ < 5) {
          problem(`${file}: ${name}[${e}] is 0x${got.toString(16)}, expected 0x${exp.toString(16)} ` +
                  `(input ${f32FromBits(w.bits[e])})`);
        }
      }
    }
    if (bad > 5) problem(`${file}: ${name}: ${bad} values differ in all`);
    compared += w.bits.length;
  }
  // no two tensors share a byte
  const spans = tensorInfos
    .map((t) => [Number(t.offset), Number(t.offset) + t.shape.map(Number).reduce((a, b) => a * b, 1) * (t.dtype === 0 ? 4 : 2)])
    .sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i][0] < spans[i - 1][1]) problem(`${file}: tensors overlap at ${spans[i][0]}`);
  }
  return compared;
}

let total = 0;
total += await checkFile("adapter_f32.gguf", 0);
total += await checkFile("adapter_f16.gguf", 1);
const version = JSON.parse(readFileSync(join(prefix, "node_modules/@huggingface/gguf/package.json"), "utf8")).version;
if (problems.length) {
  console.log(`check_gguf.mjs: ${problems.length} problems (@huggingface/gguf ${version}, node ${process.version})`);
  process.exit(1);
}
console.log(`check_gguf.mjs: ${total} values in 2 files equal, metadata, names, shapes and types right ` +
            `(@huggingface/gguf ${version}, node ${process.version})`);
