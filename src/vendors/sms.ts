/** GSM 03.38 basic character set (one septet each) and its extension table (two septets: escape + char). */
const GSM_BASIC = new Set(
  "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà",
);
const GSM_EXTENSION = new Set("\f^{}\\[~]|€");

/**
 * How many SMS segments a body is billed as: GSM-7 160 in one, 153 per part when split; a body with any
 * character outside GSM-7 goes as UCS-2: 70 UTF-16 units in one, 67 per part. An empty body is one segment.
 */
export function smsSegments(body: string): number {
  let septets = 0;
  for (const ch of body) {
    if (GSM_BASIC.has(ch)) septets += 1;
    else if (GSM_EXTENSION.has(ch)) septets += 2;
    else return segmentsOf(body.length, 70, 67);
  }
  return segmentsOf(septets, 160, 153);
}

const segmentsOf = (units: number, single: number, perPart: number) => (units <= single ? 1 : Math.ceil(units / perPart));
