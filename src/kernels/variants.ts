/**
 * Structural shader variants written side by side in one .wgsl file:
 *
 *   // @variant <name> <choice-a>
 *   ...
 *   // @variant <name> <choice-b>
 *   ...
 *   // @end <name>
 *
 * `pickVariant(code, name, choice)` keeps the chosen block and drops the others, so every variant
 * stays readable in the shader itself (no WGSL in TypeScript strings).
 */
export function pickVariant(code: string, name: string, choice: string): string {
  const lines = code.split('\n');
  const out: string[] = [];
  let inBlock = false, keep = true, found = false;
  const head = `// @variant ${name} `;
  for (const line of lines) {
    const t = line.trim();
    if (t.startsWith(head)) {
      inBlock = true;
      keep = t.slice(head.length).trim() === choice;
      found ||= keep;
      continue;
    }
    if (inBlock && t === `// @end ${name}`) { inBlock = false; keep = true; continue; }
    if (keep) out.push(line);
  }
  if (!found) throw new Error(`shader has no variant ${name}=${choice}`);
  return out.join('\n');
}
