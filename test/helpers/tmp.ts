/** Private temp directories for tests, removed when the test that made them ends. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';

/** A fresh directory under the OS temp dir, removed (with all in it) when `t` ends. */
export function tempDir(t: Test, prefix = 'zcs-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}
