import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const FIXTURE_DIR = join(import.meta.dirname, '..', 'fixtures', 'deepseek-v3-tiny');

export function fixtureFile(name: string): Uint8Array {
  return new Uint8Array(readFileSync(join(FIXTURE_DIR, name)));
}
export function fixtureJson<T = any>(name: string): T {
  return JSON.parse(readFileSync(join(FIXTURE_DIR, name), 'utf8'));
}
export function fixtureLogits(name: string): Float32Array {
  const b = fixtureFile(name);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}
export const fixtureTokens = () => fixtureJson<{ tokens: number[]; seq_len: number; prefill_split: number }>('tokens.json');
