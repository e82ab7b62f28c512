/**
 * contrib/zcswitch.service: the systemd unit parses as systemd reads it
 * (sections, Key=Value lines) and says what docs/operations.md promises.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';

const UNIT = path.join(__dirname, '..', '..', '..', 'contrib', 'zcswitch.service');

/** A minimal systemd unit-file reader: sections of Key=Value (repeated keys kept in order); comments and blanks skipped. */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const out = new Map<string, Map<string, string[]>>();
  let section: Map<string, string[]> | null = null;
  text.split('\n').forEach((raw, n) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) return;
    const sec = /^\[([A-Za-z]+)\]$/.exec(line);
    if (sec) {
      if (out.has(sec[1])) throw new Error(`line ${n + 1}: section [${sec[1]}] twice`);
      section = new Map();
      out.set(sec[1], section);
      return;
    }
    const kv = /^([A-Za-z][A-Za-z0-9]*)=(.*)$/.exec(line);
    if (!kv) throw new Error(`line ${n + 1}: not Key=Value: ${raw}`);
    if (!section) throw new Error(`line ${n + 1}: ${kv[1]} outside a section`);
    section.set(kv[1], [...(section.get(kv[1]) ?? []), kv[2]]);
  });
  return out;
}

t.test('contrib/zcswitch.service parses and has the keys the docs promise', async (t) => {
  const unit = parseUnit(fs.readFileSync(UNIT, 'utf8'));
  t.strictSame([...unit.keys()], ['Unit', 'Service', 'Install'], 'sections [Unit] [Service] [Install]');
  const svc = unit.get('Service')!;
  const one = (k: string) => {
    const v = svc.get(k);
    t.equal(v?.length, 1, `[Service] ${k} given once`);
    return v?.[0];
  };
  t.equal(one('Type'), 'notify', 'Type=notify: the switch sends READY=1 (src/cli/notify.ts)');
  t.equal(one('Restart'), 'on-failure', 'Restart=on-failure');
  t.equal(one('RuntimeDirectory'), 'zcswitch', 'RuntimeDirectory=zcswitch (/run/zcswitch, the socketDir)');
  t.equal(one('RuntimeDirectoryMode'), '0750', 'the socket directory is 0750 (socketDir must not be group-writable)');
  const exec = one('ExecStart') ?? '';
  t.match(exec, /^\/\S+ \/opt\/zcswitch\/dist\/src\/cli\/main\.js start --config \/\S+$/, 'ExecStart runs the installed switch with absolute paths');
  t.equal(unit.get('Install')!.get('WantedBy')?.[0], 'multi-user.target', 'WantedBy=multi-user.target');
  t.ok(unit.get('Unit')!.get('Description'), 'has a Description');
});
