/**
 * Live progress: on a TTY one redrawn line (bar, current run, ETA, last
 * result); otherwise one plain log line per finished run. Both on stderr,
 * so stdout carries only the final summary.
 */
import { fmtDuration } from './lib/util';

export type ProgressMode = 'auto' | 'bar' | 'lines' | 'none';

export class Progress {
  private readonly bar: boolean;
  private readonly quiet: boolean;
  private done = 0;
  private current = '';
  private last = '';
  private readonly started = Date.now();
  private timer: NodeJS.Timeout | null = null;
  private drawn = false;

  constructor(
    private readonly total: number,
    private readonly estimateSec: (remainingRuns: number, doneSec: number, done: number) => number,
    mode: ProgressMode = 'auto',
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {
    this.quiet = mode === 'none';
    this.bar = mode === 'bar' || (mode === 'auto' && !!out.isTTY && process.env.TERM !== 'dumb');
    if (this.bar) this.timer = setInterval(() => this.draw(), 500);
  }

  /** A plain message (skips, failures), printed above the bar. */
  log(msg: string): void {
    if (this.quiet) return;
    this.clear();
    this.out.write(msg + '\n');
    this.draw();
  }

  start(what: string): void {
    this.current = what;
    this.draw();
  }

  finish(what: string, result: string): void {
    this.done++;
    this.last = result;
    if (this.quiet) return;
    if (this.bar) this.draw();
    else this.out.write(`bench [${this.done}/${this.total}] ${what}: ${result}\n`);
  }

  /** A run that will not happen (its scenario failed earlier). */
  skip(): void {
    this.done++;
  }

  end(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.clear();
  }

  private eta(): string {
    const el = (Date.now() - this.started) / 1000;
    return fmtDuration(this.estimateSec(this.total - this.done, el, this.done));
  }

  private clear(): void {
    if (this.bar && this.drawn) {
      this.out.write('\r\x1b[2K');
      this.drawn = false;
    }
  }

  private draw(): void {
    if (!this.bar) return;
    const width = 24;
    const filled = Math.round((this.done / Math.max(1, this.total)) * width);
    const cols = this.out.columns || 100;
    let line = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${this.done}/${this.total} ` +
      `${fmtDuration((Date.now() - this.started) / 1000)} elapsed, ETA ${this.eta()} | ${this.current}` +
      (this.last ? ` | last: ${this.last}` : '');
    if (line.length > cols - 1) line = line.slice(0, cols - 2) + '…';
    this.out.write('\r\x1b[2K' + line);
    this.drawn = true;
  }
}
