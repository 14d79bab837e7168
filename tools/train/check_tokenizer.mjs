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
let withBos = 0;
const bos = tok.token_to_id(tc.bos_token);
for (const t of texts) {
  // The Python encoder is the bare BPE; the post-processor (which puts <|bos|> first) is checked apart.
  const e = tok.encode(t, { add_special_tokens: false }).ids;
  ids.push(e);
  if (tok.decode(e) === t) roundtrip++;
  else if (!t.includes('<|')) console.log('round-trip mismatch:', JSON.stringify(t.slice(0, 60)));
  const s = tok.encode(t).ids;
  if (s.length === e.length + 1 && s[0] === bos && s.slice(1).every((id, i) => id === e[i])) withBos++;
  else console.log('post-processor does not give [<|bos|>, ...ids]:', JSON.stringify(t.slice(0, 60)));
}
fs.writeFileSync(outPath, JSON.stringify({ texts, ids }));
console.log(`JS: encoded ${texts.length} texts, decode(encode(t)) === t for ${roundtrip} (texts with special tokens decode without them), ` +
  `encode with special tokens = [<|bos|>, ...ids] for ${withBos}`);
if (withBos !== texts.length) process.exitCode = 1;
