/**
 * DeepSeek checkpoints: the loader's container opening (loader/checkpoint.ts) with config.json read as
 * a ModelConfig and the tensors checked against the architecture's tensor table.
 */
import { openCheckpointWith, type CheckpointOf, type ConfigReader, type OpenOptions } from '../loader/checkpoint';
import type { ModelSource } from '../loader/model-source';
import { fp8BlockSize, parseConfig, scaleInvName, type ModelConfig } from './config';
import { checkTensorsAgainstConfig } from './tensors';

export type { LoadProgress, LoadNotice, OpenOptions, RawTensor, StreamOptions, CheckpointTensor } from '../loader/checkpoint';

/** An opened DeepSeek-V2/V3 checkpoint. */
export type Checkpoint = CheckpointOf<ModelConfig>;

export const deepseekConfigReader: ConfigReader<ModelConfig> = {
  parse: parseConfig,
  vocabSize: (c) => c.vocabSize,
  checkTensors: checkTensorsAgainstConfig,
  scaleInvName,
  fp8BlockSize,
};

/** Opens a DeepSeek checkpoint: config, tokenizer files and tensor table, validated before any GPU work. */
export function openCheckpoint(src: ModelSource, opts: OpenOptions = {}): Promise<Checkpoint> {
  return openCheckpointWith(deepseekConfigReader, src, opts);
}
