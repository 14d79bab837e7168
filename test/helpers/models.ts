import { memoryModel, type ModelSource } from '../../src/loader/model-source';
import { byteLevelTokenizerJson } from '../../src/model/byte-tokenizer';
import { syntheticCheckpoint, TINY_V3_CONFIG, type SyntheticOptions } from '../../src/model/synthetic';
import { fixtureFile, fixtureJson } from './fixture';
import { createEngine, WebMoeEngine, type LoadedModel } from '../../src/engine/engine';
import { openCheckpoint } from '../../src/model/checkpoint';
import { buildWeights } from '../../src/model/load';
import { CpuBackend } from '../../src/model/cpu-backend';
import { CpuRunner } from '../../src/model/cpu-runner';
import { describeModel } from '../../src/model/assemble';
import { TextCodec } from '../../src/engine/text';
import type { Gpu } from '../../src/gpu/device';

const tokenizer = JSON.stringify(byteLevelTokenizerJson());

/** The official reference fixture as a model source (with a byte-level tokenizer: its vocab is 256 bytes). */
export function fixtureModel(): ModelSource {
  return memoryModel({
    'config.json': JSON.stringify(fixtureJson('config.json')),
    'model.safetensors': fixtureFile('model.safetensors'),
    'tokenizer.json': tokenizer,
  });
}

/** A random-weight checkpoint of the tiny config with `overrides`. */
export function syntheticModel(overrides: Record<string, unknown>, o: SyntheticOptions = {}): ModelSource {
  return memoryModel({ ...syntheticCheckpoint({ ...TINY_V3_CONFIG, ...overrides }, o), 'tokenizer.json': tokenizer });
}

/** An engine on the test device (GPU runner). */
export function gpuEngine(gpu: Gpu): WebMoeEngine {
  return createEngine({}, { acquire: async () => gpu, resolve: () => { throw new Error('tests pass ModelSources'); } });
}

/** An engine on the CPU reference runner (same generation logic, reference kernels). */
export function cpuEngine(): WebMoeEngine {
  return new WebMoeEngine(async (model) => {
    const ckpt = await openCheckpoint(model as ModelSource);
    const cfg = ckpt.config;
    const weights = await buildWeights(new CpuBackend(cfg), cfg, ckpt);
    const codec = new TextCodec(ckpt.tokenizer!, ckpt.tokenizerConfig, cfg.eosTokenIds);
    const description = describeModel(cfg, { name: 'cpu', weightStorage: 'f32', expertStorage: 'f32', sparsity: 'dense', contextLength: cfg.maxPositionEmbeddings, mtpLayers: weights.mtp?.length ?? 0 });
    const loaded: LoadedModel = {
      runner: new CpuRunner(cfg, weights, cfg.maxPositionEmbeddings), codec, loadTimeMs: 0, device: 'cpu',
      info: { ...description, chatTemplate: codec.hasChatTemplate },
    };
    return loaded;
  });
}
