/**
 * Demo for `deno task dev`: users `alice` and `bob` (password `wharf-demo-password`) and six feeds whose
 * images are drawn with sharp and uploaded to the media bucket; imgproc, started next, makes their
 * thumbnails from the S3 events. Idempotent: nothing is added when alice exists.
 */
import { PutObjectCommand } from "@aws-sdk/client-s3";
import sharp from "sharp";
import { loadConfig } from "../../shared/config.ts";
import type { SeedStep } from "../../shared/stack/seed.ts";
import { hashPassword } from "../../web/feed/auth.ts";
import { normalizeFeedEnv, S3Config } from "../../web/feed/s3_config.ts";
import { createS3Client } from "../../web/feed/s3.ts";

/** The demo users' password (dev only). */
export const DEMO_PASSWORD = "wharf-demo-password";

const COLOURS = ["#e4572e", "#29335c", "#f3a712", "#a8c686", "#669bbc", "#8e5572"];

/** A demo picture: a coloured card with a circle, `w`×`h`. */
async function picture(i: number, w = 800, h = 600): Promise<Uint8Array> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}">
    <rect width="100%" height="100%" fill="${COLOURS[i % COLOURS.length]}"/>
    <circle cx="${w / 2}" cy="${h / 2}" r="${h / 3}" fill="#ffffff" fill-opacity="0.6"/></svg>`;
  return new Uint8Array(await sharp(new TextEncoder().encode(svg)).jpeg({ quality: 85 }).toBuffer());
}

/** The seed step. */
export const feedSeed: SeedStep = {
  name: "image feed demo users and feeds",
  async run({ sql, env, say }) {
    const [found] = await sql`select 1 from app.users where username = 'alice'`;
    if (found) return;
    const cfg = loadConfig(S3Config, normalizeFeedEnv(env));
    const s3 = createS3Client(cfg);
    try {
      const hash = await hashPassword(DEMO_PASSWORD);
      const users = await sql`
        insert into app.users (email, username, password)
        values ('alice@example.com', 'alice', ${hash}), ('bob@example.com', 'bob', ${hash})
        on conflict do nothing returning id, username`;
      for (let i = 0; i < 6; i++) {
        const owner = users[i % users.length];
        const bytes = await picture(i);
        const key = `u/${owner.id}/${crypto.randomUUID()}.jpg`;
        await sql`insert into app.feeds (user_id, caption, media_key, content_type, size_bytes)
                  values (${owner.id}, ${`Demo picture ${i + 1} by ${owner.username}`}, ${key}, 'image/jpeg',
                          ${bytes.length})`;
        await s3.send(
          new PutObjectCommand({
            Bucket: cfg.FEED_MEDIA_BUCKET,
            Key: key,
            Body: bytes,
            ContentType: "image/jpeg",
          }),
        );
      }
      say(`feed demo users: alice, bob (password ${DEMO_PASSWORD})`);
    } finally {
      s3.destroy();
    }
  },
};
