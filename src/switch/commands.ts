/**
 * The control socket's requests (docs/operations.md, "Adding and removing ports" and "Watching"): a
 * table from command to handler, checked arguments, a refusal as an error
 * reply that says why, and one reply for an unknown command that lists the
 * known ones. The switch does the work (CommandTarget); this file only
 * reads requests and shapes replies.
 */
import { ConfigError, POLICY_KEYS, type PortPolicyConfig, portSchema, resolvePolicy } from '../config';
import { type CaptureTarget, captureCommand } from './capture';

/** A request the switch declines: its message is the error reply. */
export class Refused extends Error {}

/** One port as `port-list` and `port-add` answer it. */
export interface PortInfo {
  name: string;
  id: number;
  type: 'vhost' | 'tap';
  /** Its socket path, `connect:<path>` (client mode) or `tap:<ifname>`. */
  socket: string;
  domain: string | null;
  peer: string | null;
  attached: boolean;
  /** Added at run time (port add, or a reload). */
  runtime: boolean;
  quota: number;
}

/** What the commands ask of the switch (Switch satisfies it). */
export interface CommandTarget extends CaptureTarget {
  /** Bridge mode: ports take tenant settings. */
  readonly bridgeMode: boolean;
  stats(): unknown;
  resetCounters(): void;
  macTable(bridge?: string): unknown[];
  addPort(name: string, o: { pair?: string; domain?: string; connect?: string; policy?: PortPolicyConfig }): PortInfo;
  removePort(name: string): void;
  listPorts(): PortInfo[];
  addPair(a: string, b: string): void;
  removePair(a: string, b: string): void;
  reload(): unknown;
  /** Test hook: data-path worker `index` dies of an uncaught error (now, or while handling the next request). */
  crashWorker(index: unknown, onNextRequest: boolean): unknown;
}

type Cmd = Record<string, unknown>;

const HANDLERS: Record<string, (sw: CommandTarget, cmd: Cmd) => unknown> = {
  stats: (sw) => sw.stats(),
  'reset-counters': (sw) => {
    sw.resetCounters();
    return { ok: true };
  },
  macs: (sw, cmd) => {
    const b = cmd.bridge;
    if (b !== undefined && b !== null && typeof b !== 'string') throw new Refused('"bridge" must be a string');
    return { ok: true, macs: sw.macTable(b ?? undefined) };
  },
  // Streams pcap on this connection: src/switch/capture.ts.
  capture: (sw, cmd) => captureCommand(sw, cmd),
  'port-add': (sw, cmd) => ({
    ok: true,
    port: sw.addPort(str(cmd, 'name'), { pair: opt(cmd, 'pair'), domain: opt(cmd, 'domain'), connect: opt(cmd, 'connect'), policy: policyFrom(sw, cmd) }),
  }),
  'port-del': (sw, cmd) => {
    sw.removePort(str(cmd, 'name'));
    return { ok: true };
  },
  'port-list': (sw) => ({ ok: true, ports: sw.listPorts() }),
  'pair-add': (sw, cmd) => {
    sw.addPair(str(cmd, 'a'), str(cmd, 'b'));
    return { ok: true };
  },
  'pair-del': (sw, cmd) => {
    sw.removePair(str(cmd, 'a'), str(cmd, 'b'));
    return { ok: true };
  },
  reload: (sw) => sw.reload(),
};

/** Answer one control request. */
export function handleCommand(sw: CommandTarget, cmd: { cmd?: unknown; [key: string]: unknown }): unknown {
  // Test hook (docs/operations.md, "Adding and removing ports"): only with ZCSWITCH_TEST_HOOKS=1 in the switch's environment.
  if (cmd.cmd === 'test-crash-worker' && process.env.ZCSWITCH_TEST_HOOKS === '1') return sw.crashWorker(cmd.worker, cmd.onNextRequest === true);
  const handler = typeof cmd.cmd === 'string' && Object.hasOwn(HANDLERS, cmd.cmd) ? HANDLERS[cmd.cmd] : undefined;
  if (handler === undefined) return { error: `unknown command ${JSON.stringify(cmd.cmd)}; known: ${Object.keys(HANDLERS).join(', ')}` };
  try {
    return handler(sw, cmd);
  } catch (e) {
    if (e instanceof Refused || e instanceof ConfigError) return { error: e.message };
    throw e;
  }
}

function str(cmd: Cmd, k: string): string {
  const v = cmd[k];
  if (typeof v !== 'string' || v === '') throw new Refused(`"${k}" must be a non-empty string`);
  return v;
}

function opt(cmd: Cmd, k: string): string | undefined {
  return cmd[k] === undefined || cmd[k] === null ? undefined : str(cmd, k);
}

/** `port add`'s tenant settings (bridge mode): checked as the config file's `ports[]` keys are; undefined when none is given. */
function policyFrom(sw: CommandTarget, cmd: Cmd): PortPolicyConfig | undefined {
  const given = Object.fromEntries(POLICY_KEYS.filter((k) => cmd[k] !== undefined && cmd[k] !== null).map((k) => [k, cmd[k]]));
  if (Object.keys(given).length === 0) return undefined;
  if (!sw.bridgeMode) throw new Refused(`${Object.keys(given).join(', ')}: bridge settings; this switch is in pair mode`);
  const r = portSchema.pick({ bridge: true, vlan: true, trunk: true, macs: true, isolated: true, limit: true }).safeParse(given);
  if (!r.success) throw new Refused(r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
  if (r.data.vlan !== undefined && r.data.trunk !== undefined) throw new Refused('vlan, trunk: a port is either an access port of one VLAN or a trunk, not both');
  return resolvePolicy(r.data);
}
