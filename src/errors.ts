/**
 * Typed errors. Every error webmoe throws on purpose is a WebMoeError with a stable `code`, so callers
 * (and the worker boundary, which keeps `name` and `code`) can tell problems apart without parsing text.
 */
export type ErrorCode =
  | 'GPU_UNAVAILABLE'
  | 'GPU_FEATURE_MISSING'
  | 'GPU_LIMIT_EXCEEDED'
  | 'GPU_VALIDATION'
  | 'GPU_OUT_OF_MEMORY'
  | 'GPU_INTERNAL'
  | 'DEVICE_LOST'
  | 'SHADER_COMPILE'
  | 'BAD_SHAPE'
  | 'BAD_FORMAT'
  | 'BAD_CONFIG'
  | 'UNSUPPORTED'
  | 'NOT_FOUND'
  | 'NETWORK'
  | 'ABORTED'
  | 'BUSY'
  | 'CONTEXT_LENGTH'
  | 'NOT_LOADED'
  | 'WORKER_CRASHED'
  | 'BAD_ARGUMENT'
  | 'QUOTA_EXCEEDED'
  | 'TRUNCATED';

export class WebMoeError extends Error {
  readonly code: ErrorCode;
  readonly details?: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.code = code;
    this.details = details;
    // Names are string literals (subclasses override them): minifiers rename classes, and the name
    // crosses the Worker boundary as an error's identity.
    this.name = 'WebMoeError';
  }
}

export class GpuUnavailableError extends WebMoeError {
  override readonly name = 'GpuUnavailableError';
  constructor(message: string) { super('GPU_UNAVAILABLE', message); }
}
export class FeatureMissingError extends WebMoeError {
  override readonly name = 'FeatureMissingError';
  constructor(feature: string, what: string) { super('GPU_FEATURE_MISSING', `${what} needs the WebGPU feature '${feature}', which this device does not have`, { feature }); }
}
/** A request that needs more than a device limit grants; names the limit and the shortfall. */
export class LimitExceededError extends WebMoeError {
  override readonly name = 'LimitExceededError';
  constructor(limit: string, needed: number, granted: number, what: string) {
    super('GPU_LIMIT_EXCEEDED', `${what} needs ${limit} = ${needed}, but the device grants ${granted} (short by ${needed - granted})`, { limit, needed, granted });
  }
}
/**
 * A GPU memory budget (LoadOptions.gpuMemoryBudget) too small for the model to run at all: what stays
 * resident plus top-k routed experts per MoE layer. Names the minimum (`details.minimumBytes`).
 */
export class GpuBudgetError extends WebMoeError {
  override readonly name = 'GpuBudgetError';
  constructor(message: string, budgetBytes: number, minimumBytes: number) {
    super('GPU_LIMIT_EXCEEDED', message, { limit: 'gpuMemoryBudget', needed: minimumBytes, granted: budgetBytes, budgetBytes, minimumBytes });
  }
}
export class GpuValidationError extends WebMoeError {
  override readonly name = 'GpuValidationError';
  constructor(message: string, code: ErrorCode = 'GPU_VALIDATION') { super(code, message); }
}
export class DeviceLostError extends WebMoeError {
  override readonly name = 'DeviceLostError';
  constructor(message: string, readonly reason?: string) { super('DEVICE_LOST', message, { reason }); }
}
export class ShaderCompileError extends WebMoeError {
  override readonly name = 'ShaderCompileError';
  constructor(label: string, messages: string) { super('SHADER_COMPILE', `WGSL compilation failed for ${label}:\n${messages}`, { label }); }
}
export class ShapeError extends WebMoeError {
  override readonly name = 'ShapeError';
  constructor(message: string) { super('BAD_SHAPE', message); }
}
/** The context would pass a KV cache's maximum capacity. */
export class ContextLengthError extends WebMoeError {
  override readonly name = 'ContextLengthError';
  constructor(needed: number, max: number, what: string) {
    super('CONTEXT_LENGTH', `${what}: ${needed} tokens requested, the cache holds at most ${max}`, { needed, max });
  }
}
export class FormatError extends WebMoeError {
  override readonly name = 'FormatError';
  constructor(message: string, details?: Record<string, unknown>) { super('BAD_FORMAT', message, details); }
}
export class ConfigError extends WebMoeError {
  override readonly name = 'ConfigError';
  constructor(field: string, message: string) { super('BAD_CONFIG', `config.json: ${field}: ${message}`, { field }); }
}
export class UnsupportedError extends WebMoeError {
  override readonly name = 'UnsupportedError';
  constructor(message: string, details?: Record<string, unknown>) { super('UNSUPPORTED', message, details); }
}
export class AbortError extends WebMoeError {
  override readonly name = 'AbortError';
  constructor(message = 'The operation was aborted') { super('ABORTED', message); }
}
export class ArgumentError extends WebMoeError {
  override readonly name = 'ArgumentError';
  constructor(message: string) { super('BAD_ARGUMENT', message); }
}

/** The engine's worker died (terminated or crashed): every pending call rejects with this. */
export class WorkerCrashedError extends WebMoeError {
  override readonly name = 'WorkerCrashedError';
  constructor(message: string) { super('WORKER_CRASHED', message); }
}

/** The browser's storage quota cannot hold a file being cached; names the bytes needed and available. */
export class QuotaExceededError extends WebMoeError {
  override readonly name = 'QuotaExceededError';
  constructor(what: string, needed: number, available: number | null) {
    super(
      'QUOTA_EXCEEDED',
      `${what}: caching needs ${needed} bytes, but the browser's storage quota has ${available === null ? 'an unknown number of' : available} bytes available` +
        ` — free space (clear this site's data or other cached models) or load without the cache (load(model, { cache: false }))`,
      { needed, available },
    );
  }
}

/** A download ended before the bytes its Content-Length (or the expected size) announced; nothing was cached. */
export class TruncatedDownloadError extends WebMoeError {
  override readonly name = 'TruncatedDownloadError';
  constructor(url: string, received: number, expected: number, how = 'the connection closed') {
    super('TRUNCATED', `${url}: ${how} after ${received} of ${expected} bytes (truncated download; nothing was cached — try again)`, { url, received, expected });
  }
}

export function isWebMoeError(e: unknown): e is WebMoeError {
  return e instanceof WebMoeError || (typeof e === 'object' && e !== null && typeof (e as any).code === 'string' && (e as any).name?.endsWith?.('Error'));
}
