/**
 * Comments and documents point into the repository by section: a path to a
 * Markdown file, a comma, and the heading in double quotes (`docs/design.md,
 * "Memory"`), several joined by "and". A heading may be cited by its start
 * ("64 KiB frames" for "64 KiB frames: the buffer stride and touching
 * ahead"). Every such reference in the tree must name a file that exists
 * and a heading in it: a section renamed or moved without its references
 * fails here, with the file that cites it.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';

const ROOT = path.join(__dirname, '..', '..', '..');
const TREES = ['src', 'test', 'bench', 'scripts', 'fuzz', 'bindings', 'docs', 'config', 'contrib', '.ci'];
/** Build outputs, dependencies, caches and results: not ours to check. */
const SKIP = new Set(['node_modules', 'dist', 'build', 'results', '.cache', '.multicore', '.build', '.git']);
const TEXT = /\.(ts|js|md|sh|cc|h|c|gyp|py)$/;

/**
 * A path ending in .md (bare or as a Markdown link's target), a comma, then
 * quoted headings joined by commas, "and" or "or". Line breaks inside
 * comments are folded to spaces first (see fold).
 */
const REFERENCE = /(?:\[[^\]]*\]\()?((?:[\w.-]+\/)*[\w.-]+\.md)\)?\s*,\s*("[^"]+"(?:\s*(?:,|,?\s*and|,?\s*or)\s*"[^"]+")*)/g;

function walk(dir: string, out: string[]): string[] {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (SKIP.has(e.name)) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else if (TEXT.test(e.name)) out.push(p);
  }
  return out;
}

/** One line: each line break with the comment marker after it (` * `, `// `, `# `) becomes a space. */
function fold(text: string): string {
  return text.replace(/\r?\n[ \t]*(?:\*(?!\/)|\/\/|#)?[ \t]*/g, ' ');
}

const headingCache = new Map<string, string[]>();
/** A Markdown file's headings, outside fenced code blocks (whose `# ` lines are shell comments). */
function headingsOf(file: string): string[] {
  let hs = headingCache.get(file);
  if (hs !== undefined) return hs;
  hs = [];
  let fenced = false;
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    else if (!fenced) {
      const m = /^#{1,6}\s+(.*?)\s*$/.exec(line);
      if (m) hs.push(m[1]);
    }
  }
  headingCache.set(file, hs);
  return hs;
}

/** A path with a folder in it is from the repository's root, else from the citing file's folder; the other as a fallback. */
function resolve(citing: string, doc: string): string | undefined {
  const fromRoot = path.join(ROOT, doc);
  const fromHere = path.join(path.dirname(citing), doc);
  const order = doc.includes('/') ? [fromRoot, fromHere] : [fromHere, fromRoot];
  return order.find((p) => fs.existsSync(p));
}

interface Reference {
  citing: string;
  doc: string;
  heading: string;
}

function references(): Reference[] {
  const files = [path.join(ROOT, 'README.md')];
  for (const tree of TREES) if (fs.existsSync(path.join(ROOT, tree))) walk(path.join(ROOT, tree), files);
  const out: Reference[] = [];
  for (const file of files) {
    const citing = path.relative(ROOT, file);
    for (const m of fold(fs.readFileSync(file, 'utf8')).matchAll(REFERENCE)) {
      for (const q of m[2].matchAll(/"([^"]+)"/g)) out.push({ citing, doc: m[1], heading: q[1].replace(/\s+/g, ' ').trim() });
    }
  }
  return out;
}

t.test('every section a comment or document cites exists', async (t) => {
  const refs = references();
  // The tree cites well over a hundred sections; far fewer means the pattern stopped matching them.
  t.ok(refs.length >= 100, `${refs.length} references found`);
  const broken: string[] = [];
  for (const r of refs) {
    const file = resolve(path.join(ROOT, r.citing), r.doc);
    if (file === undefined) {
      broken.push(`${r.citing}: ${r.doc} does not exist`);
      continue;
    }
    if (!headingsOf(file).some((h) => h.startsWith(r.heading))) broken.push(`${r.citing}: ${r.doc} has no section "${r.heading}"`);
  }
  t.same(broken, [], 'each reference names an existing file and heading');
});

t.test('a reference is found across a comment line break, and a missing heading is reported', async (t) => {
  const folded = fold('/**\n * see docs/design.md,\n * "The\n * house" and "Memory".\n */');
  const found = [...folded.matchAll(REFERENCE)].map((m) => [m[1], [...m[2].matchAll(/"([^"]+)"/g)].map((q) => q[1])]);
  t.same(found, [['docs/design.md', ['The house', 'Memory']]]);
  const hs = headingsOf(path.join(ROOT, 'docs', 'design.md'));
  t.ok(hs.some((h) => h.startsWith('The house')), 'a heading that exists is found');
  t.notOk(hs.some((h) => h.startsWith('No such section')), 'one that does not is not');
});
