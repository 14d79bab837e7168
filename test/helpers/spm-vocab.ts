/**
 * A SentencePiece-style GGUF vocabulary (tokenizer.ggml.model = llama) made from the bundled byte-level
 * BPE vocabulary: <unk>, <s>, </s>, the 256 <0xXX> byte tokens, then every bundled token that is whole
 * UTF-8 text, with spaces written as U+2581 and scores falling with the bundled id (SentencePiece's
 * BPE scores are −rank). No SentencePiece model ships with the repo; this one exercises the same code.
 */
import type { GgufKv } from '../../src/formats/gguf';
import { kv } from '../../src/formats/gguf-write';
import { GGUF_TOKEN_TYPE } from '../../src/formats/gguf-tokenizer';

const BYTE_OF = (() => {
  const keep = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const m = new Map<string, number>();
  let n = 0;
  for (let b = 0; b < 256; b++) m.set(String.fromCodePoint(keep(b) ? b : 256 + n++), b);
  return m;
})();

export function spmMetadataFromByteLevel(tokenizerJson: unknown, opts: { addSpacePrefix?: boolean; chatTemplate?: string } = {}): [string, GgufKv][] {
  const vocab = (tokenizerJson as { model: { vocab: Record<string, number> } }).model.vocab;
  const tokens = ['<unk>', '<s>', '</s>'];
  const types: number[] = [GGUF_TOKEN_TYPE.UNKNOWN, GGUF_TOKEN_TYPE.CONTROL, GGUF_TOKEN_TYPE.CONTROL];
  for (let b = 0; b < 256; b++) { tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`); types.push(GGUF_TOKEN_TYPE.BYTE); }
  const seen = new Set(tokens);
  const dec = new TextDecoder('utf-8', { fatal: true });
  for (const [t] of Object.entries(vocab).sort((a, b) => a[1] - b[1])) {
    const bytes = [...t].map((c) => BYTE_OF.get(c));
    if (bytes.some((b) => b === undefined)) continue; // the bundled special tokens
    let text: string;
    try { text = dec.decode(Uint8Array.from(bytes as number[])); } catch { continue; }
    const piece = text.replace(/ /g, '\u2581');
    if (!piece || seen.has(piece)) continue;
    seen.add(piece);
    tokens.push(piece);
    types.push(GGUF_TOKEN_TYPE.NORMAL);
  }
  const scores = tokens.map((_, i) => (types[i] === GGUF_TOKEN_TYPE.NORMAL ? -i : 0));
  const m: [string, GgufKv][] = [
    ['tokenizer.ggml.model', kv.str('llama')],
    ['tokenizer.ggml.tokens', kv.strings(tokens)],
    ['tokenizer.ggml.scores', kv.f32s(scores)],
    ['tokenizer.ggml.token_type', kv.i32s(types)],
    ['tokenizer.ggml.bos_token_id', kv.u32(1)],
    ['tokenizer.ggml.eos_token_id', kv.u32(2)],
    ['tokenizer.ggml.unknown_token_id', kv.u32(0)],
    ['tokenizer.ggml.add_bos_token', kv.bool(true)],
    ['tokenizer.ggml.add_eos_token', kv.bool(false)],
  ];
  if (opts.addSpacePrefix !== undefined) m.push(['tokenizer.ggml.add_space_prefix', kv.bool(opts.addSpacePrefix)]);
  if (opts.chatTemplate) m.push(['tokenizer.chat_template', kv.str(opts.chatTemplate)]);
  return m;
}
