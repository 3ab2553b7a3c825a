import type { Server } from 'node:http';
import { AbacusError } from './errors';

/**
 * Starts `server` on host:port; a port that cannot be opened becomes an error that names it
 * and the fix (`flag` is the setting that chose the port), not a stack trace.
 */
export function listen(server: Server, port: number, host: string | undefined, flag: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => reject(listenError(err, `${host ?? '0.0.0.0'}:${port}`, flag));
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

function listenError(err: NodeJS.ErrnoException, where: string, flag: string): Error {
  const fix = `free that port or choose another one with ${flag} (0 picks a free port)`;
  const why = err.code === 'EADDRINUSE' ? 'another process listens there' : err.code === 'EACCES' ? 'permission denied (ports below 1024 need privileges)' : err.message;
  return new AbacusError('PortUnavailable', `cannot serve metrics on ${where}: ${why}`, fix);
}
