/**
 * Per-kernel GPU time. With timestamp-query each profiled dispatch gets its own pass with timestamp
 * writes; without it the profiler falls back to wall clock around whole submits (`wallMs`).
 */
export interface KernelTiming { label: string; calls: number; totalMs: number }

export class Profiler {
  enabled = false;
  private byLabel = new Map<string, KernelTiming>();
  wallMs = 0;
  submits = 0;

  constructor(readonly timestamps: boolean) {}

  record(label: string, ms: number): void {
    const t = this.byLabel.get(label) ?? { label, calls: 0, totalMs: 0 };
    t.calls++;
    t.totalMs += ms;
    this.byLabel.set(label, t);
  }

  recordWall(ms: number): void {
    this.wallMs += ms;
    this.submits++;
  }

  report(): KernelTiming[] {
    return [...this.byLabel.values()].sort((a, b) => b.totalMs - a.totalMs);
  }

  reset(): void {
    this.byLabel.clear();
    this.wallMs = 0;
    this.submits = 0;
  }
}
