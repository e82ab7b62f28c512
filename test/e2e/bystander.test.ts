/** The bystander pair that attack tests run beside their attack: on its own it delivers every frame. */
import t from 'tap';
import { bystanderConfig, startBystander } from '../helpers/bystander';
import { startSwitch } from '../helpers/procs';

t.test('a bystander pair alone: every frame verified, ledger balanced', async (t) => {
  const sw = await startSwitch(t, bystanderConfig([{ name: 'idle' }]));
  const by = await startBystander(t, sw, { rate: 20000, seconds: 2 });
  await by.check(t);
});
