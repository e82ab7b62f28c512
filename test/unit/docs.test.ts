/**
 * The operator's documents name every drop reason the data path counts:
 * README.md ("When frames are dropped") and docs/operations.md. A reason
 * added in src/datapath/counters.ts without a line in both fails here.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { DROP_NAMES } from '../../src/datapath/counters';

const ROOT = path.join(__dirname, '..', '..', '..');

for (const doc of ['README.md', 'docs/operations.md']) {
  t.test(`${doc} names every drop reason`, async (t) => {
    const text = fs.readFileSync(path.join(ROOT, doc), 'utf8');
    const missing = DROP_NAMES.filter((n) => !text.includes(`\`${n}\``));
    t.same(missing, [], `${DROP_NAMES.length} reasons, each in backquotes`);
  });
}
