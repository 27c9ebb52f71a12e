import { decimalTable } from "../env";

/** GSM 03.38 basic character set (one septet each) and its extension table (two septets: escape + char). */
const GSM_BASIC = new Set(
  "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà",
);
const GSM_EXTENSION = new Set("\f^{}\\[~]|€");

/**
 * Twilio refuses a Body over 1,600 characters (error 21617), counted in the body's encoding; the worst case is
 * 1,600 UCS-2 units in parts of 67. What Keybrake holds for a body it cannot count (a template, say).
 */
export const MAX_SMS_SEGMENTS = Math.ceil(1600 / 67);

/**
 * How many SMS segments a body is billed as: GSM-7 160 septets in one, 153 per part when split; a body with any
 * character outside GSM-7 goes as UCS-2: 70 UTF-16 units in one, 67 per part. An empty body is one segment.
 */
export function smsSegments(body: string): number {
  const chars = [...body];
  const septets = chars.map((ch) => (GSM_BASIC.has(ch) ? 1 : GSM_EXTENSION.has(ch) ? 2 : 0));
  if (!septets.includes(0)) return segmentsOf(septets, 160, 153);
  return segmentsOf(
    chars.map((ch) => ch.length),
    70,
    67,
  );
}

/**
 * A character is never split between two parts (an escape and its character, a surrogate pair), so a part may
 * end short of `perPart`: counted character by character, not as total / perPart.
 */
function segmentsOf(sizes: number[], single: number, perPart: number): number {
  if (sizes.reduce((a, b) => a + b, 0) <= single) return 1;
  let parts = 1;
  let used = 0;
  for (const size of sizes) {
    if (used + size > perPart) {
      parts += 1;
      used = 0;
    }
    used += size;
  }
  return parts;
}

/**
 * ITU country calling codes of the destinations whose SMS price can be configured. Codes are prefix-free, so
 * the first 1, 2 or 3 digits that are a code are the country's. +7 is shared by Russia and Kazakhstan.
 */
const CALLING_CODES = table(`
  7=RU/KZ 20=EG 27=ZA 30=GR 31=NL 32=BE 33=FR 34=ES 36=HU 39=IT 40=RO 41=CH 43=AT 44=GB 45=DK 46=SE 47=NO 48=PL
  49=DE 51=PE 52=MX 53=CU 54=AR 55=BR 56=CL 57=CO 58=VE 60=MY 61=AU 62=ID 63=PH 64=NZ 65=SG 66=TH 81=JP 82=KR
  84=VN 86=CN 90=TR 91=IN 92=PK 93=AF 94=LK 95=MM 98=IR
  212=MA 213=DZ 216=TN 218=LY 220=GM 221=SN 223=ML 225=CI 226=BF 227=NE 228=TG 229=BJ 230=MU 231=LR 232=SL
  233=GH 234=NG 235=TD 236=CF 237=CM 238=CV 240=GQ 241=GA 242=CG 243=CD 244=AO 248=SC 249=SD 250=RW 251=ET
  252=SO 253=DJ 254=KE 255=TZ 256=UG 257=BI 258=MZ 260=ZM 261=MG 263=ZW 264=NA 265=MW 266=LS 267=BW 268=SZ
  350=GI 351=PT 352=LU 353=IE 354=IS 355=AL 356=MT 357=CY 358=FI 359=BG 370=LT 371=LV 372=EE 373=MD 374=AM
  375=BY 376=AD 377=MC 378=SM 380=UA 381=RS 382=ME 383=XK 385=HR 386=SI 387=BA 389=MK 420=CZ 421=SK 423=LI
  501=BZ 502=GT 503=SV 504=HN 505=NI 506=CR 507=PA 509=HT 591=BO 592=GY 593=EC 595=PY 597=SR 598=UY
  673=BN 675=PG 679=FJ 852=HK 853=MO 855=KH 856=LA 880=BD 886=TW
  960=MV 961=LB 962=JO 963=SY 964=IQ 965=KW 966=SA 967=YE 968=OM 970=PS 971=AE 972=IL 973=BH 974=QA 975=BT
  976=MN 977=NP 992=TJ 993=TM 994=AZ 995=GE 996=KG 998=UZ
`);

/**
 * NANP (+1) area codes outside the US and Canada: Caribbean countries and US territories, which Twilio prices
 * as themselves (Trinidad or Puerto Rico cost several times a US message). Every other +1 number is the US or
 * Canada, which the number alone does not tell apart.
 */
const NANP_ELSEWHERE = table(`
  242=BS 246=BB 264=AI 268=AG 284=VG 340=VI 345=KY 441=BM 473=GD 649=TC 658=JM 664=MS 670=MP 671=GU 684=AS
  721=SX 758=LC 767=DM 784=VC 787=PR 809=DO 829=DO 849=DO 868=TT 869=KN 876=JM 939=PR
`);

function table(text: string): Map<string, string[]> {
  return new Map(
    text
      .trim()
      .split(/\s+/)
      .map((entry) => {
        const [code, countries] = entry.split("=");
        return [code!, countries!.split("/")];
      }),
  );
}

/** Every country `destinationCountries` can name: what KEYBRAKE_TWILIO_SMS_PRICES may set a price for. */
export const SMS_COUNTRIES: ReadonlySet<string> = new Set(["US", "CA", ...CALLING_CODES.values(), ...NANP_ELSEWHERE.values()].flat());

/**
 * The countries an SMS to `to` may go to (the caller holds the dearest of their prices); empty when Keybrake
 * cannot tell: not an E.164 number (`whatsapp:…`, a short code, a national number) or an unlisted code.
 */
export function destinationCountries(to: string): string[] {
  const digits = /^\+([1-9]\d{6,14})$/.exec(to)?.[1];
  if (digits === undefined) return [];
  if (digits.startsWith("1")) return NANP_ELSEWHERE.get(digits.slice(1, 4)) ?? ["US", "CA"];
  for (const length of [1, 2, 3]) {
    const countries = CALLING_CODES.get(digits.slice(0, length));
    if (countries) return countries;
  }
  return [];
}

/** USD per unit (an SMS segment, a call minute) by destination country; `*` for any other destination. */
export type DestinationPrices = Record<string, number> & { "*": number };

/**
 * `GB=0.0524,*=0.5`: a KEYBRAKE_TWILIO_*_PRICES table, USD by destination country (ISO 3166 alpha-2) and `*` for
 * any other. Only countries `destinationCountries` can name may be priced.
 */
export const destinationPriceTable = (example: string) =>
  decimalTable(/[A-Za-z]{2}|\*/, `COUNTRY=USD (e.g. ${example})`, (country, usd, part) => {
    if (Number(usd) > 100) return `"${part}": a price must be a USD amount <= 100`;
    if (country !== "*" && !SMS_COUNTRIES.has(country))
      return `${country}: Keybrake cannot tell its phone numbers apart, so they are priced at *`;
    return null;
  });

/** The US and Canada at `usUsd` (a KEYBRAKE_TWILIO_*_USD unit price), then the defaults, then the operator's table. */
export function destinationPrices(usUsd: number, defaults: DestinationPrices, configured: Record<string, string>): DestinationPrices {
  const table: DestinationPrices = { US: usUsd, CA: usUsd, ...defaults };
  for (const [country, usd] of Object.entries(configured)) table[country] = Number(usd);
  return table;
}

/** The price to `to`: its country's, the dearest where the number does not tell (US or Canada), else `*`. */
export function destinationPrice(to: unknown, table: DestinationPrices): number {
  const countries = typeof to === "string" ? destinationCountries(to) : [];
  if (countries.length === 0) return table["*"];
  return Math.max(...countries.map((c) => table[c] ?? table["*"]));
}
