/**
 * Makes a thumbnail with sharp: the pixel count is checked from the header before anything is decoded
 * (a small file can declare a huge image: a decompression bomb), EXIF orientation is applied, and the
 * output is a fresh JPEG, so no metadata of the upload (GPS, camera, comments) survives.
 */
import sharp, { type Metadata } from "sharp";

/** Thumbnail settings. */
export interface ThumbnailOptions {
  /** Longest side of the thumbnail in pixels. */
  size: number;
  /** Largest input, in pixels (width × height). */
  maxPixels: number;
  /** Largest input file, in bytes (default 64 MiB): a larger object is refused before it is read. */
  maxBytes?: number;
  /** JPEG quality, 1-100. */
  quality: number;
}

/** The default {@linkcode ThumbnailOptions.maxBytes}. */
export const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;

/** Defaults: 320 px, 40 megapixels, 64 MiB, quality 80. */
export const DEFAULT_THUMBNAIL_OPTIONS: ThumbnailOptions = {
  size: 320,
  maxPixels: 40_000_000,
  maxBytes: DEFAULT_MAX_BYTES,
  quality: 80,
};

/** An input that can never make a thumbnail (not an image, too large, corrupt): not worth a retry. */
export class ImageRejectedError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ImageRejectedError";
  }
}

/** The thumbnail (JPEG bytes) of `input`; throws {@linkcode ImageRejectedError} for a bad input. */
export async function makeThumbnail(
  input: Uint8Array,
  o: ThumbnailOptions = DEFAULT_THUMBNAIL_OPTIONS,
): Promise<{ data: Uint8Array; width: number; height: number }> {
  try {
    // libvips checks `limitInputPixels` against the header before it decodes a pixel.
    const { data, info } = await sharp(input, { limitInputPixels: o.maxPixels, failOn: "error" })
      .rotate()
      .resize({ width: o.size, height: o.size, fit: "inside", withoutEnlargement: true })
      .flatten({ background: "#ffffff" })
      .jpeg({ quality: o.quality })
      .toBuffer({ resolveWithObject: true });
    return {
      data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      width: info.width,
      height: info.height,
    };
  } catch (e) {
    throw await whyRejected(input, o, e);
  }
}

/**
 * The reason an input could not make a thumbnail, from its header: read only once the decode failed, so a
 * good image costs one pass and a bad one still gets a clear message.
 */
async function whyRejected(
  input: Uint8Array,
  o: ThumbnailOptions,
  cause: unknown,
): Promise<ImageRejectedError> {
  let meta: Metadata;
  try {
    meta = await sharp(input, { limitInputPixels: false }).metadata();
  } catch (e) {
    return new ImageRejectedError("Cannot read the image: the file is not a supported image", { cause: e });
  }
  const pixels = (meta.width ?? 0) * (meta.height ?? 0);
  if (!pixels) return new ImageRejectedError("Cannot read the image: it has no dimensions", { cause });
  if (pixels > o.maxPixels) {
    return new ImageRejectedError(
      `Cannot make a thumbnail: the image is ${meta.width}x${meta.height} pixels, over the limit of ${o.maxPixels}`,
      { cause },
    );
  }
  return new ImageRejectedError("Cannot make a thumbnail: the image could not be decoded", { cause });
}
