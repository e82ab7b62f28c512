/**
 * Live progress: on a TTY a redrawn bar (cli-progress: current run, ETA,
 * last result); otherwise one plain log line per finished run. Both on
 * stderr, so stdout carries only the final summary.
 */
import cliProgress from 'cli-progress';
import { fmtDuration } from './lib/util';

export type ProgressMode = 'auto' | 'bar' | 'lines' | 'none';

export class Progress {
  private readonly quiet: boolean;
  private readonly multi: cliProgress.MultiBar | null = null;
  private readonly bar: cliProgress.SingleBar | null = null;
  private done = 0;
  private readonly started = Date.now();

  constructor(
    private readonly total: number,
    private readonly estimateSec: (remainingRuns: number, doneSec: number, done: number) => number,
    mode: ProgressMode = 'auto',
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {
    this.quiet = mode === 'none';
    const tty = mode === 'bar' || (mode === 'auto' && !!out.isTTY && process.env.TERM !== 'dumb');
    if (tty) {
      this.multi = new cliProgress.MultiBar(
        {
          stream: out,
          format: '[{bar}] {value}/{total} {duration_formatted} elapsed, ETA {estimate} | {current}{last}',
          barsize: 24,
          fps: 2,
          hideCursor: true,
          clearOnComplete: true,
          linewrap: false,
          // The harness knows better than a linear guess how long the rest takes (scenarios differ).
          etaBuffer: 1,
        },
        cliProgress.Presets.legacy,
      );
      this.bar = this.multi.create(total, 0, { current: '', last: '', estimate: '?' });
    }
  }

  /** A plain message (skips, failures), printed above the bar. */
  log(msg: string): void {
    if (this.quiet) return;
    if (this.multi) this.multi.log(msg + '\n');
    else this.out.write(msg + '\n');
  }

  start(what: string): void {
    this.bar?.update(this.done, { current: what, estimate: this.eta() });
  }

  finish(what: string, result: string): void {
    this.done++;
    if (this.quiet) return;
    if (this.bar) this.bar.update(this.done, { last: ` | last: ${result}`, estimate: this.eta() });
    else this.out.write(`bench [${this.done}/${this.total}] ${what}: ${result}\n`);
  }

  /** A run that will not happen (its scenario failed earlier). */
  skip(): void {
    this.done++;
    this.bar?.update(this.done);
  }

  end(): void {
    this.multi?.stop();
  }

  private eta(): string {
    const el = (Date.now() - this.started) / 1000;
    return fmtDuration(this.estimateSec(this.total - this.done, el, this.done));
  }
}
