/**
 * The control socket: newline-delimited JSON requests and replies on a Unix
 * socket (no fds travel here, so Node's net module is fine). Used by
 * `zcswitch stats`, `zcswitch capture` and by tests.
 *
 * A command may answer with a StreamReply instead of a JSON value: the
 * server then stops reading requests on that connection and hands the
 * socket to the reply's start(), which owns it from then on (it writes its
 * own reply line; see src/capture/wire.ts for the capture stream).
 */
import fs from 'node:fs';
import net from 'node:net';
import type { Logger } from '../log';
import { bindSecurelyAsync } from './socket-file';

export type CommandHandler = (cmd: { cmd?: unknown }) => unknown;

/** What a streaming command does with its connection once the server hands it over. */
export interface StreamSession {
  /** The switch is stopping: finish (a last message if there is room) and close the socket. */
  shutdown(): void;
}

/** A command's answer that takes over the connection (e.g. capture). */
export class StreamReply {
  constructor(readonly start: (sock: net.Socket, rest: string) => StreamSession) {}
}

export class ControlServer {
  private server: net.Server | null = null;
  /** The socket was renamed to `path`. */
  private published = false;
  /** Open connections, with the stream session that owns the socket, if any. */
  private readonly conns = new Map<net.Socket, StreamSession | null>();

  constructor(
    private readonly path: string,
    private readonly log: Logger,
    private readonly handle: CommandHandler,
    /** Permission bits of the socket file (`sockets.controlMode`, default 0600: owner only). */
    private readonly mode = 0o600,
  ) {}

  async listen(): Promise<void> {
    fs.rmSync(this.path, { force: true });
    const server = net.createServer((sock) => {
      let buf = '';
      this.conns.set(sock, null);
      sock.on('close', () => this.conns.delete(sock));
      sock.setEncoding('utf8');
      const onData = (d: string) => {
        try {
          serve(d);
        } catch (e) {
          // Fault boundary: a command that fails in an unexpected way costs this connection only.
          this.log.error({ err: e }, `control socket: request failed, closing the connection: ${(e as Error)?.message}`);
          sock.destroy();
        }
      };
      const serve = (d: string) => {
        buf += d;
        if (buf.length > 65536) return sock.destroy();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          let reply: unknown;
          try {
            reply = this.handle(JSON.parse(line));
          } catch (e) {
            reply = { error: `bad request: ${(e as Error).message}` };
          }
          if (reply instanceof StreamReply) {
            sock.off('data', onData);
            this.conns.set(sock, reply.start(sock, buf));
            return;
          }
          sock.write(JSON.stringify(reply) + '\n');
        }
      };
      sock.on('data', onData);
      sock.on('error', () => sock.destroy());
    });
    this.server = server;
    // Bound in a private staging directory and chmod-ed there before it is renamed into place: the
    // control socket never exists with the umask's mode (see socket-file.ts).
    await bindSecurelyAsync(
      this.path,
      { mode: this.mode, gid: null, groupField: 'sockets.group' },
      (tmp) =>
        new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(tmp, () => {
            server.off('error', reject);
            resolve();
          });
        }),
      () => server.close(),
    );
    this.published = true;
    this.log.debug({ path: this.path }, 'control socket listening');
  }

  close(): void {
    this.server?.close();
    this.server = null;
    // libuv unlinks the path it bound (the staging one, long gone); the published name is ours to remove.
    if (this.published) fs.rmSync(this.path, { force: true });
    this.published = false;
    for (const [sock, session] of this.conns) {
      if (session) session.shutdown();
      else sock.destroy();
    }
    this.conns.clear();
    fs.rmSync(this.path, { force: true });
  }
}

/** Send one command to a running switch and return its reply. */
export function controlRequest(path: string, cmd: object, timeoutMs = 5000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(path);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no answer from the switch at ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify(cmd) + '\n'));
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        sock.end();
        try {
          resolve(JSON.parse(buf.slice(0, nl)));
        } catch (e) {
          reject(e);
        }
      }
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new Error(e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? `no switch is running at ${path} (${e.code})` : e.message));
    });
  });
}
