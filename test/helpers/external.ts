/**
 * External programs the tests in test/external need (QEMU, dpdk-testpmd,
 * tshark, root for network namespaces), and one policy for when they are
 * missing:
 *  - elsewhere: the tests that need it are skipped, with the reason printed
 *    (tap's `{ skip: reason }`), never counted as passes;
 *  - in CI (CI=true, as .ci/run runs the suite): a FAILURE, since .ci/run
 *    installs all of them and a missing one means the suite did not test
 *    what it claims to.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Test } from 'tap';

export const IN_CI = process.env.CI === 'true';

/** Absolute path of an executable `name` on PATH, or null. */
export function which(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      /* not here */
    }
  }
  return null;
}

/**
 * Whether the tests that need `what` can run: false when `problem` is null
 * (they can), otherwise the reason, to pass as those tests' `skip` option.
 * Under CI=true a problem also fails `t`.
 */
export function requireExternal(t: Test, what: string, problem: string | null): string | false {
  if (problem === null) return false;
  const reason = `${what}: ${problem}`;
  if (IN_CI) t.fail(`${reason} (CI=true: .ci/run installs it, so its absence is a failure, not a skip)`);
  else t.comment(`skipped, ${reason}`);
  return reason;
}

/**
 * requireExternal for a program: `found` is where it is (default: looked up
 * on PATH), `install` says how to get it.
 */
export function requireProgram(t: Test, name: string, install: string, found: string | null = which(name)): string | false {
  return requireExternal(t, name, found ? null : `not installed (${install})`);
}

/** The reason network namespaces with a TAP device cannot be made here, or null. */
export function netnsProblem(): string | null {
  try {
    execFileSync('sh', ['-c', 'ip netns add zcs-probe && ip netns del zcs-probe && test -c /dev/net/tun'], { stdio: ['ignore', 'pipe', 'pipe'] });
    return null;
  } catch (e) {
    const err = String((e as { stderr?: Buffer }).stderr ?? '').trim().split('\n')[0];
    return `cannot create a network namespace with /dev/net/tun (needs root / CAP_NET_ADMIN and iproute2)${err ? `: ${err}` : ''}`;
  }
}
