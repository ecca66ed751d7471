// Celery task events carry results as Python repr strings ("{'label': 'setosa'}").
// This reads the literal subset results are made of — dicts, lists, tuples,
// strings, numbers, True/False/None — and returns undefined for anything else,
// so the page can show structured results without eval.

export function parsePythonLiteral(text) {
  if (typeof text !== 'string') return undefined;
  let i = 0;
  const fail = () => { throw new SyntaxError(`unexpected input at ${i}`); };
  const ws = () => { while (i < text.length && /\s/.test(text[i])) i += 1; };

  function string() {
    let prefix = '';
    while (/[rRbBuU]/.test(text[i])) prefix += text[i++];
    const quote = text[i];
    const triple = text.startsWith(quote.repeat(3), i);
    const end = triple ? quote.repeat(3) : quote;
    i += end.length;
    const raw = /r/i.test(prefix);
    let out = '';
    while (i < text.length && !text.startsWith(end, i)) {
      const c = text[i++];
      if (c !== '\\' || raw) { out += c; continue; }
      const e = text[i++];
      const simple = { n: '\n', t: '\t', r: '\r', '\\': '\\', "'": "'", '"': '"', '0': '\0', a: '\x07', b: '\b', f: '\f', v: '\v' };
      if (e in simple) out += simple[e];
      else if (e === 'x' || e === 'u' || e === 'U') {
        const len = { x: 2, u: 4, U: 8 }[e];
        const hex = text.slice(i, i + len);
        if (!/^[0-9a-fA-F]+$/.test(hex) || hex.length !== len) fail();
        out += String.fromCodePoint(parseInt(hex, 16));
        i += len;
      } else out += `\\${e}`;
    }
    if (i >= text.length) fail();
    i += end.length;
    return out;
  }

  function sequence(close) {
    const items = [];
    ws();
    while (text[i] !== close) {
      items.push(value());
      ws();
      if (text[i] === ',') { i += 1; ws(); } else if (text[i] !== close) fail();
    }
    i += 1;
    return items;
  }

  function dict() {
    const out = {};
    ws();
    while (text[i] !== '}') {
      const key = value();
      ws();
      if (text[i++] !== ':') fail();
      out[String(key)] = value();
      ws();
      if (text[i] === ',') { i += 1; ws(); } else if (text[i] !== '}') fail();
    }
    i += 1;
    return out;
  }

  function value() {
    ws();
    const c = text[i];
    if (c === '{') { i += 1; return dict(); }
    if (c === '[') { i += 1; return sequence(']'); }
    if (c === '(') { i += 1; return sequence(')'); }
    if (c === "'" || c === '"' || (/[rRbBuU]/.test(c) && /['"]/.test(text[i + 1] ?? ''))) return string();
    for (const [word, result] of [['True', true], ['False', false], ['None', null]]) {
      if (text.startsWith(word, i)) { i += word.length; return result; }
    }
    const number = /^-?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf|nan)/.exec(text.slice(i));
    if (number) {
      i += number[0].length;
      return Number(number[0].replace('inf', 'Infinity').replace('nan', 'NaN'));
    }
    return fail();
  }

  try {
    const result = value();
    ws();
    return i === text.length ? result : undefined;
  } catch {
    return undefined;
  }
}

/** A TaskState result as data: objects as they are, Python reprs parsed when possible. */
export function resultValue(result) {
  if (typeof result !== 'string') return result;
  const parsed = parsePythonLiteral(result);
  return parsed === undefined ? result : parsed;
}

/** "RuntimeError('disk full')" → {type: 'RuntimeError', message: 'disk full'}. */
export function describeException(exception) {
  if (!exception) return null;
  const text = String(exception);
  const match = /^([A-Za-z_][\w.]*)\((.*)\)$/s.exec(text);
  if (!match) return { type: null, message: text };
  const args = parsePythonLiteral(`(${match[2]}${match[2].trim() ? ',' : ''})`);
  const message = Array.isArray(args) && args.length ? args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(', ') : match[2];
  return { type: match[1], message };
}
