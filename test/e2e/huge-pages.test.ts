/**
 * Huge pages end to end: a switch that put its Shared Buffers region on
 * 2 MiB pages says so in the SHARED_BUFFERS reply (SHARED_BUFFERS_F_HUGE_PAGES),
 * and the guest driver then maps the region with 2 MiB entries too. Without
 * that the kernel left about half of a 256 MiB region on 4 KiB entries in a
 * VM, and with 64 KiB buffers every buffer a VM touched was a TLB miss
 * (docs/PERFORMANCE.md, "64 KiB frames"). With sharedBuffers.hugePages false
 * the flag is not sent and the VM asks for nothing.
 */
import fs from 'node:fs';
import t from 'tap';
import { HUGE_PAGE_SIZE } from '../../bindings';
import { startSwitch, stopProc, vm, waitAttached } from '../helpers/procs';

/** kB of the process's mappings of the switch's region, and how many of them are on 2 MiB entries. */
function regionMapping(pid: number): { kb: number; pmdKb: number } {
  let inRegion = false;
  let kb = 0;
  let pmdKb = 0;
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) {
      inRegion = line.includes('memfd:zcswitch-shared-buffers');
      continue;
    }
    const f = /^(\w+):\s+(\d+) kB/.exec(line);
    if (!inRegion || !f) continue;
    if (f[1] === 'Size') kb += Number(f[2]);
    if (f[1] === 'ShmemPmdMapped' || f[1] === 'FilePmdMapped') pmdKb += Number(f[2]);
  }
  return { kb, pmdKb };
}

// 512 buffers of 64 KiB + 64: 32 whole 2 MiB pages, the stride of the zc-gso bench.
const sharedBuffers = { bufCount: 512, bufSize: 65600 };
const wholePagesKb = Math.floor((sharedBuffers.bufCount * sharedBuffers.bufSize) / HUGE_PAGE_SIZE) * (HUGE_PAGE_SIZE / 1024);

for (const hugePages of [true, false]) t.test(`a VM maps the region ${hugePages ? 'on 2 MiB entries when the switch uses huge pages' : 'as it comes when the switch does not'}`, async (t) => {
  const sw = await startSwitch(t, { sharedBuffers: { ...sharedBuffers, hugePages }, ports: [{ name: 'a' }, { name: 'b' }], pairs: [['a', 'b']] });
  const st = await sw.stats();
  t.equal(st.sharedBuffers.hugePages, hugePages, `the switch ${hugePages ? 'put' : 'did not put'} its region on huge pages`);
  const sink = vm(sw, 'b', ['--mode', 'sink', '--duration', '30']);
  t.teardown(() => stopProc(sink));
  await waitAttached(sw, 'b');
  const m = regionMapping(sink.child.pid!);
  t.ok(m.kb >= (sharedBuffers.bufCount * sharedBuffers.bufSize) / 1024, `the VM mapped the buffers (${m.kb} kB)`);
  if (hugePages) {
    t.ok(m.pmdKb >= wholePagesKb, `every whole 2 MiB page of the buffers is one entry in the VM (${m.pmdKb} of ${wholePagesKb} kB)`);
  } else {
    t.equal(m.pmdKb, 0, 'no 2 MiB entries: the VM asked for none');
  }
});
