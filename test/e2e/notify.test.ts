/**
 * systemd readiness: with NOTIFY_SOCKET set (a Type=notify unit,
 * contrib/zcswitch.service) the switch sends READY=1 once every port's
 * socket listens and the control socket is up, and STOPPING=1 on SIGTERM.
 * The test plays systemd: a datagram socket it reads.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { closeFd, unixDgramBind, unixRecvMsg } from '../../bindings';
import { run, stopProc, tempDir, waitFor } from '../helpers/procs';

/** Every datagram waiting on `fd`, as text. */
function drain(fd: number): string[] {
  const out: string[] = [];
  const buf = new Uint8Array(4096);
  for (;;) {
    const fds: number[] = [];
    const n = unixRecvMsg(fd, buf, fds);
    for (const f of fds) closeFd(f);
    if (n < 0) return out;
    out.push(Buffer.from(buf.subarray(0, n)).toString());
  }
}

for (const abstract of [false, true]) {
  t.test(`READY=1 after the ports listen, STOPPING=1 at SIGTERM (${abstract ? 'abstract' : 'path'} NOTIFY_SOCKET)`, async (t) => {
    const dir = tempDir(t);
    const sockDir = path.join(dir, 'sock');
    const notify = abstract ? `@zcs-notify-${process.pid}-${Date.now()}` : path.join(dir, 'notify');
    const fd = unixDgramBind(notify);
    t.teardown(() => closeFd(fd));
    const cfg = path.join(dir, 'switch.json');
    fs.writeFileSync(cfg, JSON.stringify({ socketDir: sockDir, ports: [{ name: 'vm1' }, { name: 'vm2' }], pairs: [['vm1', 'vm2']] }));
    const p = run(['start', '-c', cfg], { env: { NOTIFY_SOCKET: notify } });
    t.teardown(() => stopProc(p));
    const got: string[] = [];
    let socketsAtReady: boolean[] = [];
    await waitFor('READY=1 on the notify socket', () => {
      const msgs = drain(fd);
      if (msgs.length > 0 && got.length === 0) {
        socketsAtReady = ['vm1.sock', 'vm2.sock', 'zcswitch.ctl'].map((f) => fs.statSync(path.join(sockDir, f), { throwIfNoEntry: false })?.isSocket() ?? false);
      }
      got.push(...msgs);
      return got.length > 0 || p.child.exitCode !== null;
    }, 15000);
    t.equal(got.length, 1, `one notification at start: ${JSON.stringify(got)}`);
    const lines = (got[0] ?? '').split('\n');
    t.ok(lines.includes('READY=1'), 'READY=1');
    t.ok(lines.includes(`MAINPID=${p.child.pid}`), 'MAINPID is the switch');
    t.match(got[0], /STATUS=2 port\(s\) set up/, 'a STATUS line');
    t.strictSame(socketsAtReady, [true, true, true], 'both port sockets and the control socket were listening when READY=1 arrived');
    t.equal(await stopProc(p), 0, 'SIGTERM: exit 0');
    t.strictSame(drain(fd), ['STOPPING=1'], 'STOPPING=1 when it shuts down');
  });
}
