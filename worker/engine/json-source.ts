/**
 * The source text of a top-level member of a JSON object, for the rare value whose parsed
 * form loses what the contract needs (a number with more digits than a double holds).
 * Node 20's JSON.parse gives no access to source text, so this walks the object's members.
 *
 * Precondition: `json` is text JSON.parse accepted and whose value is an object. The walk
 * then needs no validation: it finds each member's name and skips its value (strings by
 * their closing quote, nested objects and arrays by depth, outside strings), in linear time.
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/**
 * The exact source text of the last member named `name` at the top level (a name given twice
 * takes its last value, as JSON.parse does), or undefined when there is none. Names written
 * with escapes (`"time\u0073tamp"`) are compared decoded.
 */
export function topLevelMemberText(json: string, name: string): string | undefined {
  let found: string | undefined;
  let i = skipWhitespace(json, 0) + 1; // past the object's `{`
  for (;;) {
    i = skipWhitespace(json, i);
    if (json.charCodeAt(i) !== QUOTE) return found; // `}`: the object ends (empty or after a `,`-less member)
    const nameEnd = stringEnd(json, i);
    const valueStart = skipWhitespace(json, skipWhitespace(json, nameEnd) + 1); // past the `:`
    const valueEnd = valueEndAt(json, valueStart);
    if (isName(json, i, nameEnd, name)) found = json.slice(valueStart, valueEnd);
    i = skipWhitespace(json, valueEnd);
    if (json.charCodeAt(i) !== 0x2c) return found; // no `,`: this was the last member
    i++;
  }
}

/** Whether the string token json[start, end) (quotes included) is `name`, escapes decoded. */
function isName(json: string, start: number, end: number, name: string): boolean {
  const length = end - start - 2;
  if (length === name.length) return json.startsWith(name, start + 1);
  // Escapes only make a name longer than what it decodes to.
  if (length < name.length) return false;
  for (let i = start + 1; i < end - 1; i++) if (json.charCodeAt(i) === BACKSLASH) return JSON.parse(json.slice(start, end)) === name;
  return false;
}

/** JSON whitespace: space, tab, LF, CR (RFC 8259). */
function skipWhitespace(s: string, i: number): number {
  for (;;) {
    const c = s.charCodeAt(i);
    if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) return i;
    i++;
  }
}

/** The index after the closing quote of the string starting at `start` (its opening quote). */
function stringEnd(s: string, start: number): number {
  let from = start + 1;
  for (;;) {
    const q = s.indexOf('"', from);
    // A quote is escaped when an odd number of backslashes precede it.
    let backslashes = 0;
    while (s.charCodeAt(q - 1 - backslashes) === BACKSLASH) backslashes++;
    if (backslashes % 2 === 0) return q + 1;
    from = q + 1;
  }
}

/** The index after the value starting at `start`. */
function valueEndAt(s: string, start: number): number {
  const c = s.charCodeAt(start);
  if (c === QUOTE) return stringEnd(s, start);
  if (c === 0x7b || c === 0x5b) return nestedEnd(s, start);
  // A number, true, false or null: it ends at the first delimiter.
  let i = start + 1;
  for (;;) {
    const d = s.charCodeAt(i);
    if (d === 0x2c || d === 0x7d || d === 0x5d || d === 0x20 || d === 0x09 || d === 0x0a || d === 0x0d || Number.isNaN(d)) return i;
    i++;
  }
}

/** The index after the object or array starting at `start`, strings skipped whole. */
function nestedEnd(s: string, start: number): number {
  let depth = 0;
  let i = start;
  for (;;) {
    const c = s.charCodeAt(i);
    if (c === QUOTE) {
      i = stringEnd(s, i);
      continue;
    }
    if (c === 0x7b || c === 0x5b) depth++;
    else if (c === 0x7d || c === 0x5d) {
      depth--;
      if (depth === 0) return i + 1;
    }
    i++;
  }
}
