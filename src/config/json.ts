/**
 * JSON syntax error location. V8's JSON.parse messages do not always carry a
 * position (e.g. "Unexpected token '}', ... is not valid JSON"), and differ
 * between Node versions, so after JSON.parse fails we re-scan the text with a
 * small strict JSON scanner to find where and why.
 */

export interface JsonSyntaxProblem {
  /** 1-based. */
  line: number;
  /** 1-based, in UTF-16 code units. */
  column: number;
  offset: number;
  message: string;
}

class ScanError extends Error {
  constructor(
    readonly offset: number,
    message: string,
  ) {
    super(message);
  }
}

export function lineColumn(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: offset - lineStart + 1 };
}

function show(c: string): string {
  return c >= ' ' && c !== '\x7f' ? `'${c}'` : JSON.stringify(c);
}

/** Returns the first syntax problem in `text`, or undefined if it is valid JSON. */
export function findJsonSyntaxError(text: string): JsonSyntaxProblem | undefined {
  const n = text.length;
  let i = 0;
  const fail = (message: string, at = i): never => {
    throw new ScanError(at, message);
  };
  const ws = (): void => {
    while (i < n) {
      const c = text[i];
      if (c === ' ' || c === '\t' || c === '\n' || c === '\r') i++;
      else break;
    }
  };
  const unexpected = (expected: string): never => {
    if (i >= n) return fail(`unexpected end of file, expected ${expected}`);
    const c = text[i]!;
    if (c === '/') return fail('comments are not allowed in JSON');
    if (c === "'") return fail('strings must use double quotes in JSON');
    const word = /[A-Za-z_$][A-Za-z0-9_$]*/y;
    word.lastIndex = i;
    const w = word.exec(text);
    if (w) return fail(`unexpected word '${w[0]}', expected ${expected} (strings need double quotes; the only bare words are true, false and null)`);
    return fail(`unexpected ${show(c)}, expected ${expected}`);
  };

  const string = (): void => {
    const start = i;
    i++; // opening quote
    for (;;) {
      if (i >= n) fail('unterminated string', start);
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return;
      }
      if (c < 0x20) fail('control character (e.g. a raw newline) inside a string; escape it');
      if (c === 0x5c) {
        const e = text[i + 1];
        if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 2;
        else if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) i += 6;
        else fail('invalid escape sequence in string');
      } else {
        i++;
      }
    }
  };

  const numberRe = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
  const number = (): void => {
    numberRe.lastIndex = i;
    const m = numberRe.exec(text);
    if (!m) fail('invalid number');
    i += m![0].length;
    if (i < n && /[0-9.eE+-]/.test(text[i]!)) fail('invalid number');
  };

  const value = (): void => {
    ws();
    if (i >= n) unexpected('a value');
    const c = text[i]!;
    if (c === '{') object();
    else if (c === '[') array();
    else if (c === '"') string();
    else if (c === '-' || (c >= '0' && c <= '9')) number();
    else {
      const w = /true|false|null/y;
      w.lastIndex = i;
      const m = w.exec(text);
      if (m && !/[A-Za-z0-9_$]/.test(text[i + m[0].length] ?? '')) i += m[0].length;
      else unexpected('a value');
    }
  };

  const object = (): void => {
    i++; // {
    ws();
    if (text[i] === '}') {
      i++;
      return;
    }
    for (;;) {
      ws();
      if (text[i] === '}') fail("trailing comma before '}' is not allowed in JSON");
      if (text[i] !== '"') unexpected('a double-quoted property name');
      string();
      ws();
      if (text[i] !== ':') unexpected("':' after the property name");
      i++;
      value();
      ws();
      if (text[i] === ',') {
        i++;
        continue;
      }
      if (text[i] === '}') {
        i++;
        return;
      }
      unexpected("',' or '}' after a property value");
    }
  };

  const array = (): void => {
    i++; // [
    ws();
    if (text[i] === ']') {
      i++;
      return;
    }
    for (;;) {
      ws();
      if (text[i] === ']') fail("trailing comma before ']' is not allowed in JSON");
      value();
      ws();
      if (text[i] === ',') {
        i++;
        continue;
      }
      if (text[i] === ']') {
        i++;
        return;
      }
      unexpected("',' or ']' after an array element");
    }
  };

  try {
    ws();
    if (i >= n) fail('file is empty (expected a JSON object)');
    value();
    ws();
    if (i < n) fail(`unexpected ${show(text[i]!)} after the end of the JSON value`);
    return undefined;
  } catch (e) {
    if (!(e instanceof ScanError)) throw e;
    return { ...lineColumn(text, e.offset), offset: e.offset, message: e.message };
  }
}

/**
 * Describe why JSON.parse rejected `text`: prefer our scanner; fall back to
 * V8's message (and its "at position N", if any).
 */
export function describeJsonSyntaxError(text: string, err: unknown): JsonSyntaxProblem {
  const found = findJsonSyntaxError(text);
  if (found) return found;
  const msg = err instanceof Error ? err.message : String(err);
  const m = /at position (\d+)/.exec(msg);
  const offset = m ? Number(m[1]) : text.length;
  const clean = msg.replace(/\s*in JSON at position \d+.*$/s, '').replace(/\s*\(line \d+ column \d+\)/, '');
  return { ...lineColumn(text, offset), offset, message: clean };
}
