// Encode the held-out documents (and a few edge cases) with @huggingface/tokenizers (the JS library
// the runtime uses) and write the ids as JSON, for check_tokenizer.py to compare with the Python encoder.
// Usage (from the repo root, so node_modules resolves): node tools/train/check_tokenizer.mjs <tokenizer dir> <heldout.jsonl> <out.json>
import { Tokenizer } from '@huggingface/tokenizers';
import fs from 'fs';
import path from 'path';

const [dir, heldPath, outPath] = process.argv.slice(2);
const tj = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
const tc = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
const tok = new Tokenizer(tj, tc);
const texts = fs.readFileSync(heldPath, 'utf8').trim().split('\n').map((l) => JSON.parse(l).text);
texts.push("Hello World!  It's   a test\n\nwith  newlines, 3.14 and _under_score <|bos|>x<|eos|>");
texts.push('<|user|>Hi there<|assistant|>Hello.');
texts.push('Caf\u00e9 na\u00efve \u2014 \u{1F600} emoji');
const ids = [];
let roundtrip = 0;
for (const t of texts) {
  const e = tok.encode(t).ids;
  ids.push(e);
  if (tok.decode(e) === t) roundtrip++;
  else if (!t.includes('<|')) console.log('round-trip mismatch:', JSON.stringify(t.slice(0, 60)));
}
fs.writeFileSync(outPath, JSON.stringify({ texts, ids }));
console.log(`JS: encoded ${texts.length} texts, decode(encode(t)) === t for ${roundtrip} (texts with special tokens decode without them)`);
