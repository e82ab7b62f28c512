/**
 * Socket security, on real `zcswitch start` processes: the port and control
 * sockets get the configured mode and group (not the umask's), an unsafe
 * socketDir (a symlink, another user's, group- or world-writable) is refused
 * with status 2 and a message naming the path and socketDir, a missing one
 * is created 0750, and bad modes and unknown groups are config errors that
 * name the field.
 *
 * The switch runs with umask 000 here, so a socket that got the umask's mode
 * would be 0777 and every mode check below would fail. Group checks use
 * groups every Debian has (daemon, gid 1; users, gid 100), looked up in
 * /etc/group as the switch does. Root for chown to 65534 and to groups the
 * test user is not in (CI runs as root; the cases that need it say so).
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { run, startSwitch, stopProc, tempDir, waitForOutput } from '../helpers/procs';

const isRoot = process.getuid?.() === 0;
const gidOf = (name: string): number => {
  const line = fs.readFileSync('/etc/group', 'utf8').split('\n').find((l) => l.startsWith(`${name}:`));
  if (!line) throw new Error(`no group ${name} in /etc/group`);
  return Number(line.split(':')[2]);
};
const modeOf = (p: string): number => fs.statSync(p).mode & 0o7777;
const octal = (m: number): string => m.toString(8).padStart(4, '0');

// The children inherit this: without the switch's chmod every socket would be 0777.
process.umask(0o000);

t.test('port sockets get sockets.mode/group, a port its own socket.{mode,group}, the control socket 0600', { skip: !isRoot && 'chown to groups needs root' }, async (t) => {
  const sw = await startSwitch(t, {
    sockets: { group: 'daemon' },
    ports: [{ name: 'a' }, { name: 'b', socket: { mode: '0600', group: 'users' } }, { name: 'c', socket: { mode: '0640' } }],
  });
  const a = path.join(sw.dir, 'a.sock');
  const b = path.join(sw.dir, 'b.sock');
  const c = path.join(sw.dir, 'c.sock');
  t.ok(fs.statSync(a).isSocket(), 'a.sock is a socket');
  t.equal(octal(modeOf(a)), '0660', 'a.sock: the default mode 0660');
  t.equal(fs.statSync(a).gid, gidOf('daemon'), 'a.sock: sockets.group (daemon)');
  t.equal(octal(modeOf(b)), '0600', 'b.sock: its own mode');
  t.equal(fs.statSync(b).gid, gidOf('users'), 'b.sock: its own group (users)');
  t.equal(octal(modeOf(c)), '0640', 'c.sock: its own mode');
  t.equal(fs.statSync(c).gid, gidOf('daemon'), 'c.sock: inherits sockets.group');
  t.equal(octal(modeOf(sw.control)), '0600', 'the control socket is owner-only by default');
  t.equal(fs.statSync(sw.control).gid, process.getgid!(), 'the control socket keeps the switch group');
  t.strictSame(fs.readdirSync(sw.dir).filter((f) => f.startsWith('.zcs')), [], 'no staging directory is left behind');
  t.equal((await sw.stats()).ports.length, 3, 'the control socket answers');
  t.equal(await sw.stop(), 0);
  t.strictSame(fs.readdirSync(sw.dir).filter((f) => f.endsWith('.sock') || f.endsWith('.ctl')), [], 'stop removes every socket');
});

t.test('defaults without a group: 0660, the switch group; sockets.controlMode', async (t) => {
  const sw = await startSwitch(t, { sockets: { controlMode: '0660' }, ports: [{ name: 'a' }] });
  const a = path.join(sw.dir, 'a.sock');
  t.equal(octal(modeOf(a)), '0660');
  t.equal(fs.statSync(a).gid, process.getgid!(), 'group unchanged');
  t.equal(octal(modeOf(sw.control)), '0660', 'sockets.controlMode');
});

t.test('a missing socketDir is created 0750 with sockets.group', { skip: !isRoot && 'chown to daemon needs root' }, async (t) => {
  const dir = tempDir(t);
  const socketDir = path.join(dir, 'new', 'sockets');
  const cfg = path.join(dir, 'cfg.json');
  fs.writeFileSync(cfg, JSON.stringify({ socketDir, sockets: { group: 'daemon' }, ports: [{ name: 'vm1' }] }));
  const p = run(['start', '-c', cfg]);
  t.teardown(() => stopProc(p));
  await waitForOutput(p, 'the switch to print its control socket', (out) => out.includes('control:'));
  const st = fs.lstatSync(socketDir);
  t.ok(st.isDirectory(), 'created');
  t.equal(octal(st.mode & 0o7777), '0750', 'mode 0750 (the umask is 000)');
  t.equal(st.gid, gidOf('daemon'), 'group: sockets.group, so that group can reach the sockets');
  t.equal(st.uid, process.getuid!(), 'owned by the switch user');
  t.equal(await stopProc(p), 0);
});

t.test('an unsafe socketDir is refused: exit 2, the path and socketDir named, nothing made in it', async (t) => {
  const dir = tempDir(t);
  const good = path.join(dir, 'good');
  fs.mkdirSync(good, { mode: 0o700 });
  const cases: [string, string, RegExp][] = [];
  const link = path.join(dir, 'link');
  fs.symlinkSync(good, link);
  cases.push(['a symbolic link to a directory', link, /is a symbolic link/]);
  const world = path.join(dir, 'world');
  fs.mkdirSync(world);
  fs.chmodSync(world, 0o777);
  cases.push(['a world-writable directory', world, /is world-writable \(mode 0777\)/]);
  const sticky = path.join(dir, 'sticky');
  fs.mkdirSync(sticky);
  fs.chmodSync(sticky, 0o1777);
  cases.push(['a world-writable sticky directory', sticky, /is world-writable \(mode 1777\)/]);
  const group = path.join(dir, 'group');
  fs.mkdirSync(group);
  fs.chmodSync(group, 0o770);
  cases.push(['a group-writable directory', group, /is group-writable \(mode 0770\)/]);
  if (isRoot) {
    const other = path.join(dir, 'other');
    fs.mkdirSync(other, { mode: 0o700 });
    fs.chownSync(other, 65534, 65534);
    cases.push(["another user's directory", other, /is owned by uid 65534, not by this user \(uid 0\) or root/]);
  }
  for (const [what, socketDir, problem] of cases) {
    const cfg = path.join(dir, 'cfg.json');
    fs.writeFileSync(cfg, JSON.stringify({ socketDir, ports: [{ name: 'vm1' }] }));
    const p = run(['start', '-c', cfg]);
    const { code } = await p.exited;
    t.equal(code, 2, `${what}: exit 2`);
    const err = p.stderr();
    t.match(err, `socketDir "${socketDir}"`, `${what}: names the field and the path: ${err.trim()}`);
    t.match(err, problem, `${what}: says what is wrong`);
    t.strictSame(fs.readdirSync(socketDir), [], `${what}: nothing made in it`);
  }
  t.strictSame(fs.readdirSync(good), [], 'nothing made through the symlink');
});

t.test('a bad mode and an unknown group are config errors naming the field (exit 2)', async (t) => {
  const dir = tempDir(t);
  const socketDir = path.join(dir, 'sockets');
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['a bad mode string', { sockets: { mode: 'rw-rw----' }, ports: [{ name: 'vm1' }] }, /sockets\.mode: must be an octal string like "0660"/],
    ['a port mode as a decimal number', { ports: [{ name: 'vm1', socket: { mode: 660 } }] }, /ports\[0\]\.socket\.mode: must be at most 511 .* "0660"/],
    ['an unknown group', { sockets: { group: 'no-such-group-zcs' }, ports: [{ name: 'vm1' }] }, /sockets\.group: no group named "no-such-group-zcs"/],
    ['an unknown port group', { ports: [{ name: 'vm1' }, { name: 'vm2', socket: { group: 'no-such-group-zcs' } }] }, /ports\[1\]\.socket\.group: no group named "no-such-group-zcs"/],
  ];
  for (const [what, body, message] of cases) {
    const cfg = path.join(dir, 'cfg.json');
    fs.writeFileSync(cfg, JSON.stringify({ socketDir, ...body }));
    const p = run(['start', '-c', cfg]);
    t.equal((await p.exited).code, 2, `${what}: exit 2`);
    t.match(p.stderr(), message, `${what}: names the field: ${p.stderr().trim()}`);
    t.match(p.stderr(), cfg, `${what}: names the config file`);
    t.notOk(fs.existsSync(socketDir), `${what}: socketDir not even created`);
  }
});
