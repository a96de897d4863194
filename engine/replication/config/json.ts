// The JSON form of a resource file, read with jsonc-parser (strict: no comments, no trailing commas)
// into plain objects without prototypes, in file order, with keys given twice reported. jsonc-parser
// says what went wrong and where (an error code and an offset); this file only words it for people:
// "line 3, column 15: unexpected "C"; JSON strings take double quotes".
import { ParseErrorCode, printParseErrorCode, visit } from 'jsonc-parser';
import { SyntaxAt, isObj, newObj, put, quote, type Obj, type Report } from './messages.js';

/** JSON nesting beyond this is refused (a resource file needs 3 levels). */
const MAX_DEPTH = 64;

/** "line 3, column 7" for a character offset. */
function position(text: string, offset: number): string {
  let line = 1;
  let lineStart = 0;
  for (let k = 0; k < offset && k < text.length; k++) if (text.charCodeAt(k) === 10) { line++; lineStart = k + 1; }
  return `line ${line}, column ${offset - lineStart + 1}`;
}

/** What stands at `pos`, for "found ...": a string as written, a word, or one character. */
function found(text: string, pos: number): string {
  if (pos >= text.length) return 'the end of the file';
  if (text[pos] === '"') return /^"[^"\n]{0,40}"?/.exec(text.slice(pos, pos + 42))![0];
  const m = /^[A-Za-z0-9_$.+-]+/.exec(text.slice(pos, pos + 40));
  return m ? quote(m[0]) : quote(text[pos]!);
}

/** The offset of the first character in the string token at `start` for which `bad(i)` holds, else `start`. */
function within(text: string, start: number, bad: (i: number) => boolean): number {
  for (let i = start + 1; i < text.length && text[i] !== '"' && text[i] !== '\n'; i += text[i] === '\\' ? 2 : 1) if (bad(i)) return i;
  return start;
}

interface Container { value: Obj | unknown[]; path: string[]; start: number; key: string | null }

/** Parses JSON text into plain values; objects have no prototype and keep file order. Keys given twice are reported to `rep`. */
export function parseJson(text: string, rep: Report): unknown {
  const stack: Container[] = [];
  let root: unknown;
  /** What the grammar expects next: it decides how an error reads. */
  let expect: 'value' | 'key' | 'colon' | 'comma' | 'end' = 'value';
  let lastSeparator = '';
  /** Where the container closed last began: jsonc-parser ends an unterminated one before it reports it. */
  let lastClosed = 0;
  const fail = (offset: number, msg: string): never => {
    throw new SyntaxAt(position(text, offset), msg);
  };
  const top = (): Container | undefined => stack[stack.length - 1];
  const childPath = (): string[] => {
    const t = top();
    if (t === undefined) return [];
    return [...t.path, Array.isArray(t.value) ? String(t.value.length) : t.key ?? ''];
  };
  const store = (v: unknown): void => {
    const t = top();
    if (t === undefined) {
      root = v;
      expect = 'end';
      return;
    }
    if (Array.isArray(t.value)) t.value.push(v);
    else {
      const key = t.key!;
      if (Object.hasOwn(t.value, key)) rep.error([...t.path, key], 'given twice; JSON would silently keep the last one');
      put(t.value, key, v);
    }
    expect = 'comma';
  };
  const open = (value: Obj | unknown[], offset: number): void => {
    if (stack.length >= MAX_DEPTH) fail(offset, 'nested too deeply');
    stack.push({ value, path: childPath(), start: offset, key: null });
    expect = Array.isArray(value) ? 'value' : 'key';
  };
  const close = (): void => {
    const c = stack.pop()!;
    lastClosed = c.start;
    store(c.value);
  };
  const error = (code: ParseErrorCode, offset: number, length: number): never => {
    const c = text[offset];
    const here = found(text, offset);
    const inObject = isObj(top()?.value);
    switch (code) {
      case ParseErrorCode.InvalidCommentToken:
      case ParseErrorCode.UnexpectedEndOfComment:
        return fail(offset, 'JSON has no comments');
      case ParseErrorCode.UnexpectedEndOfString: {
        const end = offset + length;
        return fail(offset, end < text.length ? 'unterminated string (a string cannot span lines)' : 'unterminated string');
      }
      case ParseErrorCode.InvalidEscapeCharacter:
      case ParseErrorCode.InvalidUnicode: {
        const at = within(text, offset, (i) => text[i] === '\\' && !/^\\(["\\/bfnrt]|u[0-9a-fA-F]{4})/.test(text.slice(i, i + 6)));
        return fail(at, `invalid escape ${quote(text.slice(at, at + 2))} in a string`);
      }
      case ParseErrorCode.InvalidCharacter:
        return fail(within(text, offset, (i) => text.charCodeAt(i) < 0x20), 'control character in a string; escape it');
      case ParseErrorCode.CloseBraceExpected:
        return fail(lastClosed, 'unterminated object: missing "}"');
      case ParseErrorCode.CloseBracketExpected:
        return fail(lastClosed, 'unterminated array: missing "]"');
      case ParseErrorCode.EndOfFileExpected:
        return fail(offset, `unexpected ${here} after the end of the JSON object`);
      case ParseErrorCode.ColonExpected:
        return fail(offset, `expected ":" after the property name ${quote((top()?.key) ?? '')}, found ${here}`);
      case ParseErrorCode.CommaExpected:
        if (inObject && c === '"') return fail(offset, `missing "," before ${here}`);
        return fail(offset, inObject ? `expected "," or "}" after a property value, found ${here}` : `expected "," or "]" after an array element, found ${here}`);
      default:
        break;
    }
    // A symbol, a property name or a value where it does not belong: say what was expected there.
    if (offset >= text.length) {
      if (expect === 'key' || expect === 'comma') return fail(top()?.start ?? offset, inObject ? 'unterminated object: missing "}"' : 'unterminated array: missing "]"');
      return fail(offset, 'unexpected end of the file; expected a value');
    }
    if ((c === '}' || c === ']') && lastSeparator === ',' && (expect === 'key' || expect === 'value')) return fail(offset, `trailing comma before "${c}"`);
    switch (expect) {
      case 'end': return fail(offset, `unexpected ${here} after the end of the JSON object`);
      case 'key':
        if (/[A-Za-z_']/.test(c ?? '')) return fail(offset, `property names take double quotes, found ${here}`);
        return fail(offset, `expected a property name in double quotes, found ${here}`);
      case 'colon': return fail(offset, `expected ":" after the property name ${quote(top()?.key ?? '')}, found ${here}`);
      case 'comma':
        return fail(offset, inObject ? `expected "," or "}" after a property value, found ${here}` : `expected "," or "]" after an array element, found ${here}`);
      default:
        if (c === "'") return fail(offset, 'JSON strings take double quotes');
        if (/[A-Za-z]/.test(c ?? '')) return fail(offset, `unexpected ${here}; JSON strings take double quotes`);
        if (code === ParseErrorCode.InvalidSymbol || code === ParseErrorCode.ValueExpected || code === ParseErrorCode.InvalidNumberFormat
          || code === ParseErrorCode.UnexpectedEndOfNumber) return fail(offset, `unexpected ${here}; expected a value`);
        return fail(offset, `${printParseErrorCode(code)} at ${here}`);
    }
  };
  visit(text, {
    onObjectBegin: (offset) => open(newObj(), offset),
    onObjectProperty: (name) => {
      top()!.key = name;
      expect = 'colon';
    },
    onObjectEnd: close,
    onArrayBegin: (offset) => open([], offset),
    onArrayEnd: close,
    onLiteralValue: (value) => store(value),
    onSeparator: (sep) => {
      lastSeparator = sep;
      expect = sep === ':' || Array.isArray(top()?.value) ? 'value' : 'key';
    },
    onError: error,
  }, { disallowComments: true, allowTrailingComma: false, allowEmptyContent: false });
  return root;
}
