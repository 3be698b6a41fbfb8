import assert from "node:assert/strict";
import sharp from "sharp";
import { ImageRejectedError, makeThumbnail } from "./thumbnail.ts";

const opts = { size: 64, maxPixels: 1_000_000, quality: 80 };

Deno.test("makeThumbnail() fits the image in the box, applies EXIF orientation and keeps no metadata", async () => {
  // 200x100 stored, orientation 6 (rotate 90° clockwise to display): 100x200 as seen.
  const input = await sharp({ create: { width: 200, height: 100, channels: 3, background: "#f00" } })
    .withMetadata({ orientation: 6 }).jpeg().toBuffer();
  const t = await makeThumbnail(new Uint8Array(input), opts);
  assert.deepEqual([t.width, t.height], [32, 64]);
  const meta = await sharp(t.data).metadata();
  assert.equal(meta.format, "jpeg");
  assert.deepEqual([meta.width, meta.height], [32, 64]);
  assert.equal(meta.orientation, undefined);
  assert.equal(meta.exif, undefined);
});

Deno.test("makeThumbnail() rejects bad inputs with the reason read from the header", async () => {
  const rejected = async (input: Uint8Array) => {
    const e = await makeThumbnail(input, opts).then(() => undefined, (e) => e);
    assert.ok(e instanceof ImageRejectedError, `expected a rejection, got ${e}`);
    return e.message;
  };
  assert.equal(
    await rejected(new TextEncoder().encode("just text, named .jpg")),
    "Cannot read the image: the file is not a supported image",
  );
  // 2000x2000 of one colour: a small PNG, over the 1-megapixel limit.
  const bomb = await sharp({ create: { width: 2000, height: 2000, channels: 3, background: "#000" } })
    .png({ compressionLevel: 9 }).toBuffer();
  assert.equal(
    await rejected(new Uint8Array(bomb)),
    "Cannot make a thumbnail: the image is 2000x2000 pixels, over the limit of 1000000",
  );
  // A PNG whose header is whole and whose pixel data is cut off.
  const png = await sharp({
    create: {
      width: 300,
      height: 300,
      channels: 3,
      background: "#888",
      noise: { type: "gaussian", mean: 128, sigma: 40 },
    },
  }).png().toBuffer();
  assert.equal(
    await rejected(new Uint8Array(png.subarray(0, 2_000))),
    "Cannot make a thumbnail: the image could not be decoded",
  );
});
