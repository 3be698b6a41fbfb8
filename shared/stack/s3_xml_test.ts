import assert from "node:assert/strict";
import { errorXml, escapeXml, parseCompleteMultipart, parseDelete, xmlDocument } from "./s3_xml.ts";

Deno.test("S3 XML documents escape text and leave out missing elements", () => {
  assert.equal(escapeXml(`a<b>&"c'`), "a&lt;b&gt;&amp;&quot;c&apos;");
  const doc = xmlDocument("ListBucketResult", [["Name", "b"], ["Prefix", "a&b"], ["Delimiter", undefined], [
    "Contents",
    [["Key", "<k>"], ["Size", 3]],
  ]]);
  assert.equal(
    doc,
    '<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' +
      "<Name>b</Name><Prefix>a&amp;b</Prefix><Contents><Key>&lt;k&gt;</Key><Size>3</Size></Contents></ListBucketResult>",
  );
  assert.match(
    errorXml("NoSuchKey", "The specified key does not exist.", "/b/k&", "R1"),
    /<Error><Code>NoSuchKey<\/Code><Message>The specified key does not exist.<\/Message><Resource>\/b\/k&amp;<\/Resource><RequestId>R1<\/RequestId><\/Error>$/,
  );
});

Deno.test("a DeleteObjects body gives its keys unescaped and its quiet flag", () => {
  const xml = `<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
    <Object><Key>a &amp; b</Key></Object><Object><Key>&lt;x&gt;/&#233;</Key><VersionId>v</VersionId></Object>
    <Quiet>true</Quiet></Delete>`;
  assert.deepEqual(parseDelete(xml), { keys: ["a & b", "<x>/é"], quiet: true });
  assert.deepEqual(parseDelete("<Delete><Object><Key></Key></Object></Delete>"), {
    keys: [""],
    quiet: false,
  });
  assert.equal(parseDelete("<Other/>"), undefined);
  assert.equal(parseDelete("<Delete><Object><VersionId>v</VersionId></Object></Delete>"), undefined);
});

Deno.test("a CompleteMultipartUpload body gives part numbers and ETags without quotes", () => {
  const xml = `<CompleteMultipartUpload><Part><ETag>"abc"</ETag><PartNumber>1</PartNumber></Part>
    <Part><PartNumber>2</PartNumber><ETag>&quot;def&quot;</ETag><ChecksumCRC32>x</ChecksumCRC32></Part></CompleteMultipartUpload>`;
  assert.deepEqual(parseCompleteMultipart(xml), [{ partNumber: 1, etag: "abc" }, {
    partNumber: 2,
    etag: "def",
  }]);
  assert.equal(
    parseCompleteMultipart(
      "<CompleteMultipartUpload><Part><PartNumber>x</PartNumber></Part></CompleteMultipartUpload>",
    ),
    undefined,
  );
  assert.equal(parseCompleteMultipart("<Nope/>"), undefined);
});
