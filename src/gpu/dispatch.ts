import { LimitExceededError } from '../errors';

/**
 * Folds a linear workgroup count into (x, y) when it passes the per-dimension limit. Shaders recover
 * the linear index as `wid.x + wid.y * nwg.x` and return when it is past the real count.
 */
export function foldWorkgroups(count: number, maxPerDim: number): [number, number] {
  if (count <= maxPerDim) return [Math.max(1, count), 1];
  const y = Math.ceil(count / maxPerDim);
  if (y > maxPerDim) throw new LimitExceededError('maxComputeWorkgroupsPerDimension²', count, maxPerDim * maxPerDim, 'a dispatch');
  return [Math.ceil(count / y), y];
}

export const ceilDiv = (a: number, b: number) => Math.floor((a + b - 1) / b);
