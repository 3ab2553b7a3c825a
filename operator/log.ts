/** JSON-lines logging to stderr: one object per line, greppable and parseable. */
export type Level = 'debug' | 'info' | 'warn' | 'error';

let minLevel: Level = (process.env.ABACUS_LOG_LEVEL as Level | undefined) ?? 'info';
const ORDER: Level[] = ['debug', 'info', 'warn', 'error'];

export function setLogLevel(level: Level): void {
  minLevel = level;
}

export function log(level: Level, msg: string, fields: Record<string, unknown> = {}): void {
  if (ORDER.indexOf(level) < ORDER.indexOf(minLevel)) return;
  process.stderr.write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }) + '\n');
}
