// The tiny family checkpoints of tools/families/make_fixtures.py (test/fixtures/families/<family>/).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openCheckpoint, type Checkpoint } from '../../src/model/checkpoint';
import { memoryModel } from '../../src/loader/model-source';

export const FAMILY_FIXTURES = ['qwen2_moe', 'qwen3_moe', 'olmoe', 'mixtral', 'granitemoe', 'gpt_oss'] as const;
export type FamilyFixture = (typeof FAMILY_FIXTURES)[number];

export const familyDir = (f: FamilyFixture) => join(import.meta.dirname, '..', 'fixtures', 'families', f);
const file = (f: FamilyFixture, name: string) => new Uint8Array(readFileSync(join(familyDir(f), name)));

export interface FamilyReference {
  family: string; model_type: string; tokens: number[]; seq_len: number; prefill_split: number; vocab_size: number; greedy_next: number;
}

export function familyFixture(f: FamilyFixture) {
  const ref = JSON.parse(readFileSync(join(familyDir(f), 'reference.json'), 'utf8')) as FamilyReference;
  const b = file(f, 'logits.f32.bin');
  const logits = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  const routing = JSON.parse(readFileSync(join(familyDir(f), 'routing.json'), 'utf8')) as Record<string, number[][]>;
  return { ref, logits, routing };
}

export function familyCheckpoint(f: FamilyFixture): Promise<Checkpoint> {
  return openCheckpoint(memoryModel({ 'config.json': readFileSync(join(familyDir(f), 'config.json'), 'utf8'), 'model.safetensors': file(f, 'model.safetensors') }));
}
