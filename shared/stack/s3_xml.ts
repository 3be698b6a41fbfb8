/**
 * The XML of S3's REST API, as the local S3 server writes and reads it: error bodies, listing results,
 * and the two request bodies it parses (DeleteObjects, CompleteMultipartUpload). S3's XML is flat and
 * fixed, so a few templates and a tolerant element reader do, without an XML library.
 */

const XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n';
const NS = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"';

/** Escapes text for an XML element or attribute. */
export function escapeXml(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (c) => c === "&" ? "&amp;" : c === "<" ? "&lt;" : c === ">" ? "&gt;" : c === '"' ? "&quot;" : "&apos;",
  );
}

function unescapeXml(s: string): string {
  return s.replace(
    /&(amp|lt|gt|quot|apos|#(\d+)|#x([0-9a-fA-F]+));/g,
    (_, name, dec, hex) =>
      dec
        ? String.fromCodePoint(Number(dec))
        : hex
        ? String.fromCodePoint(parseInt(hex, 16))
        : ({ amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" } as Record<string, string>)[name],
  );
}

/** A value of an element: text, a nested element list, or nothing. */
export type XmlValue = string | number | boolean | undefined | null | XmlNode[];
/** One element: its name and value. */
export type XmlNode = [name: string, value: XmlValue];

function render(nodes: XmlNode[]): string {
  let out = "";
  for (const [name, value] of nodes) {
    if (value === undefined || value === null) continue;
    out += `<${name}>${Array.isArray(value) ? render(value) : escapeXml(String(value))}</${name}>`;
  }
  return out;
}

/** A whole S3 XML document with root element `root` (in S3's namespace). */
export function xmlDocument(root: string, children: XmlNode[]): string {
  return `${XML_HEAD}<${root}${NS}>${render(children)}</${root}>`;
}

/** S3's error body. */
export function errorXml(code: string, message: string, resource: string, requestId: string): string {
  return XML_HEAD +
    render([["Error", [["Code", code], ["Message", message], ["Resource", resource], [
      "RequestId",
      requestId,
    ]]]]);
}

/** The text of every `<name>…</name>` element in `xml` (no nesting of the same name). */
export function elements(xml: string, name: string): string[] {
  const out: string[] = [];
  const re = new RegExp(`<${name}(?:\\s[^>]*)?>([\\s\\S]*?)</${name}>|<${name}(?:\\s[^>]*)?/>`, "g");
  for (const m of xml.matchAll(re)) out.push(m[1] ?? "");
  return out;
}

/** The unescaped text of the first `<name>` element, or undefined. */
export function text(xml: string, name: string): string | undefined {
  const e = elements(xml, name)[0];
  return e === undefined ? undefined : unescapeXml(e);
}

/** The request of DeleteObjects: the keys and whether the answer lists only errors. */
export function parseDelete(xml: string): { keys: string[]; quiet: boolean } | undefined {
  if (!/<Delete[\s>]/.test(xml)) return undefined;
  const keys = elements(xml, "Object").map((o) => text(o, "Key"));
  if (keys.some((k) => k === undefined)) return undefined;
  return { keys: keys as string[], quiet: text(xml, "Quiet")?.trim() === "true" };
}

/** The request of CompleteMultipartUpload: parts by number with their ETags (quotes removed). */
export function parseCompleteMultipart(xml: string): { partNumber: number; etag: string }[] | undefined {
  if (!/<CompleteMultipartUpload[\s>]/.test(xml)) return undefined;
  const parts = elements(xml, "Part").map((p) => ({
    partNumber: Number(text(p, "PartNumber")?.trim()),
    etag: (text(p, "ETag") ?? "").trim().replace(/^"|"$/g, ""),
  }));
  if (parts.some((p) => !Number.isInteger(p.partNumber) || !p.etag)) return undefined;
  return parts;
}
