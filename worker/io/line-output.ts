/**
 * Line output of the commands that print results (`abacus counts`, the demo, help). When the
 * reader goes away — `abacus counts | head` — writes fail with EPIPE; that is the reader's
 * way of saying "enough", so the command stops writing and ends quietly with exit code 0
 * instead of an unhandled-error stack trace.
 */
export class LineOutput {
  private gone = false;
  private failure: Error | undefined;

  constructor(private readonly out: NodeJS.WritableStream) {
    out.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') this.gone = true;
      else this.failure ??= err;
    });
  }

  /** True once the reader has gone away: stop producing output. */
  get closed(): boolean {
    return this.gone;
  }

  /** Writes `text`, waiting while the reader is slow; false once the reader has gone away. */
  async write(text: string): Promise<boolean> {
    this.throwFailure();
    if (this.gone) return false;
    if (!this.out.write(text)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.out.off('drain', done);
          this.out.off('error', done);
          this.out.off('close', done);
          resolve();
        };
        this.out.on('drain', done);
        this.out.on('error', done);
        this.out.on('close', done);
      });
    }
    this.throwFailure();
    return !this.gone;
  }

  private throwFailure(): void {
    if (this.failure !== undefined) throw this.failure;
  }
}

/** Standard output, shared by every command of this process. */
let stdout: LineOutput | undefined;

export function standardOutput(): LineOutput {
  stdout ??= new LineOutput(process.stdout);
  return stdout;
}
