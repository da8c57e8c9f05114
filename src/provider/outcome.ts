/**
 * What the engine takes of a provider's answer to `send`: the records it refused for good,
 * checked, since a provider may be anyone's code.
 *
 * @module
 */

/** The provider's rejections with an index inside the batch, each index once. */
export function validRejections(
  outcome: unknown,
  size: number,
): { index: number; reason: string }[] {
  const list = (outcome as { rejected?: unknown } | undefined)?.rejected;
  if (!Array.isArray(list)) return [];
  const seen = new Set<number>();
  const out: { index: number; reason: string }[] = [];
  for (const r of list) {
    const i = (r as { index?: unknown })?.index;
    if (typeof i !== "number" || !Number.isInteger(i) || i < 0 || i >= size || seen.has(i)) {
      continue;
    }
    seen.add(i);
    out.push({ index: i, reason: String((r as { reason?: unknown }).reason) });
  }
  return out;
}
