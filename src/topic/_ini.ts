/**
 * A line scanner for the INI dialect of flow and mapping files. It keeps exact line and
 * column numbers and never merges or drops lines (npm:ini does both).
 *
 * Rules: `;` or `#` as the first non-blank character starts a comment line; a `;` or `#`
 * preceded by white space ends a line's content (inline comment); `[name]` starts a
 * section; anything else is content. CR LF line ends and a missing final newline are fine.
 *
 * @module
 */

/** One meaningful line of an INI file. */
export type IniLine =
  | {
    readonly kind: "section";
    readonly line: number;
    readonly column: number;
    readonly name: string;
    /** 1-based column of the first character of the name. */
    readonly nameColumn: number;
  }
  | {
    readonly kind: "content";
    readonly line: number;
    /** 1-based column of the first character of `text`. */
    readonly column: number;
    /** The content with surrounding white space and inline comments removed. */
    readonly text: string;
  }
  | { readonly kind: "malformed"; readonly line: number; readonly column: number; readonly reason: string };

function stripInlineComment(s: string): string {
  for (let i = 1; i < s.length; i++) {
    const c = s[i];
    if ((c === ";" || c === "#") && (s[i - 1] === " " || s[i - 1] === "\t")) {
      return s.slice(0, i);
    }
  }
  return s;
}

/** Splits text into meaningful lines; blank and comment lines are skipped. */
export function scanIni(text: string): IniLine[] {
  const out: IniLine[] = [];
  const lines = text.split("\n");
  if (lines.length > 0 && lines[0].charCodeAt(0) === 0xfeff) lines[0] = lines[0].slice(1);
  for (let i = 0; i < lines.length; i++) {
    let raw = lines[i];
    if (raw.endsWith("\r")) raw = raw.slice(0, -1);
    const lead = raw.length - raw.trimStart().length;
    const body = raw.slice(lead);
    if (body === "" || body[0] === ";" || body[0] === "#") continue;
    const content = stripInlineComment(body).trimEnd();
    const line = i + 1;
    if (content[0] === "[") {
      const close = content.indexOf("]");
      if (close < 0) {
        out.push({
          kind: "malformed",
          line,
          column: lead + content.length + 1,
          reason: "section header without ']': write it as [Name]",
        });
      } else if (close !== content.length - 1) {
        out.push({
          kind: "malformed",
          line,
          column: lead + close + 2,
          reason: `text after the section header: "${content.slice(close + 1)}"`,
        });
      } else {
        const inner = content.slice(1, -1);
        const innerLead = inner.length - inner.trimStart().length;
        out.push({
          kind: "section",
          line,
          column: lead + 1,
          name: inner.trim(),
          nameColumn: lead + 2 + innerLead,
        });
      }
      continue;
    }
    out.push({ kind: "content", line, column: lead + 1, text: content });
  }
  return out;
}

/**
 * True when the text has an `[actionmapping]` or `[actiontimeout]` section (the mark of a
 * mapping file).
 */
export function hasActionMappingSection(text: string): boolean {
  return /^[ \t]*\[[ \t]*action(mapping|timeout)[ \t]*\][ \t]*\r?$/im.test(text);
}
